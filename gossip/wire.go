package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Everything Surge puts on the wire through memberlist starts with one
// byte naming its format, so that a later version can add formats and an
// older member can skip what it does not know. The rest is JSON: small,
// easy to debug, and memberlist compresses and encrypts it anyway.
const (
	// msgEndpoint is a user message holding one EndpointEvent.
	msgEndpoint byte = 1
	// stateV1 is a push/pull state: the views of the sender and of every
	// alive origin it knows.
	stateV1 byte = 1
	// metaV1 is node metadata: wireMeta.
	metaV1 byte = 1
)

var errUnknownFormat = errors.New("unknown format")

func encodeEvent(ev EndpointEvent) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return append([]byte{msgEndpoint}, b...), nil
}

func decodeEvent(b []byte) (EndpointEvent, error) {
	var ev EndpointEvent
	if len(b) == 0 || b[0] != msgEndpoint {
		return ev, errUnknownFormat
	}
	if err := json.Unmarshal(b[1:], &ev); err != nil {
		return ev, err
	}
	if ev.Node == "" {
		return ev, fmt.Errorf("event without node")
	}
	if ev.Type != EndpointReady && ev.Type != EndpointGone {
		return ev, fmt.Errorf("event type %d", ev.Type)
	}
	return ev, nil
}

// wireState is the push/pull state.
type wireState struct {
	Views []wireView `json:"v"`
}

type wireView struct {
	Node    string          `json:"n"`
	Base    uint64          `json:"b"`
	Entries []EndpointEvent `json:"e,omitempty"`
}

func encodeState(s wireState) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append([]byte{stateV1}, b...), nil
}

func decodeState(b []byte) (wireState, error) {
	var s wireState
	if len(b) == 0 || b[0] != stateV1 {
		return s, errUnknownFormat
	}
	err := json.Unmarshal(b[1:], &s)
	return s, err
}

// wireMeta is NodeMeta plus what Gossip itself needs to tell.
type wireMeta struct {
	NodeMeta
	// Epoch is the Seq at which the member started, with no endpoints. A
	// member that sees a new epoch forgets the member's older endpoints
	// (see table.floor).
	Epoch uint64 `json:"ep"`
	// Leaving is set by Leave just before it leaves, so that the others can
	// tell a leave from a death (memberlist tells them apart only inside).
	Leaving bool `json:"l,omitempty"`
}

func encodeMeta(m wireMeta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte{metaV1}, b...), nil
}

func decodeMeta(b []byte) (wireMeta, error) {
	var m wireMeta
	if len(b) == 0 || b[0] != metaV1 {
		return m, errUnknownFormat
	}
	err := json.Unmarshal(b[1:], &m)
	return m, err
}

// maxEncodedMetaLen is the length of m on the wire with the longest epoch.
func maxEncodedMetaLen(m NodeMeta) int {
	b, err := encodeMeta(wireMeta{NodeMeta: m, Epoch: math.MaxUint64, Leaving: true})
	if err != nil {
		return math.MaxInt
	}
	return len(b)
}
