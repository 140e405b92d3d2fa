package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// EndpointEventType says whether a replica endpoint started or stopped
// taking requests.
type EndpointEventType uint8

// Endpoint event types.
const (
	// EndpointReady: the replica passed its readiness probe and takes
	// requests at IP:Port.
	EndpointReady EndpointEventType = 1
	// EndpointGone: the replica stopped taking requests (terminating,
	// failed, removed).
	EndpointGone EndpointEventType = 2
)

// String returns "ready" or "gone".
func (t EndpointEventType) String() string {
	switch t {
	case EndpointReady:
		return "ready"
	case EndpointGone:
		return "gone"
	}
	return fmt.Sprintf("EndpointEventType(%d)", uint8(t))
}

// EndpointKey names one replica endpoint. It matches the gateway's key for
// an endpoint: replica names are unique in a namespace.
type EndpointKey struct {
	Namespace, Replica string
}

// EndpointEvent tells that a replica endpoint became ready or went away.
// The agent that runs the replica broadcasts it; every member receives it.
type EndpointEvent struct {
	Type      EndpointEventType `json:"t"`
	Namespace string            `json:"ns"`
	Function  string            `json:"fn"`
	Revision  string            `json:"rev"`
	Replica   string            `json:"rep"`
	// IP and Port are where the replica serves. Required for Ready.
	IP   netip.Addr `json:"ip,omitzero"`
	Port uint16     `json:"port,omitempty"`
	// Node is the member that broadcast the event (set by Broadcast).
	Node string `json:"node"`
	// Seq orders the events of one Node: higher is newer. Broadcast sets it
	// from a hybrid clock, max(previous+1, now in Unix nanoseconds), so a
	// restarted agent's events order after its earlier life's.
	Seq uint64 `json:"seq"`
}

// Key returns the endpoint's key.
func (e EndpointEvent) Key() EndpointKey { return EndpointKey{e.Namespace, e.Replica} }

// Addr returns IP:Port.
func (e EndpointEvent) Addr() netip.AddrPort { return netip.AddrPortFrom(e.IP, e.Port) }

// maxEventLen bounds an encoded endpoint event so that it fits in one UDP
// gossip packet (memberlist's 1400 bytes, less headers, label and GCM
// overhead) with room to piggyback.
const maxEventLen = 1000

// validate checks an event as Broadcast receives it (without Node and Seq).
func (e EndpointEvent) validate() error {
	var errs []string
	if e.Type != EndpointReady && e.Type != EndpointGone {
		errs = append(errs, fmt.Sprintf("Type %d is not Ready or Gone", e.Type))
	}
	if e.Namespace == "" || e.Replica == "" {
		errs = append(errs, "Namespace and Replica are required")
	}
	if e.Type == EndpointReady {
		if !e.IP.IsValid() {
			errs = append(errs, "IP is required for Ready")
		}
		if e.Port == 0 {
			errs = append(errs, "Port is required for Ready")
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// MemberState is a member's liveness. MemberAlive and MemberDead are the
// strings of api.NodeState.
//
// There is no "suspect": memberlist (v0.7.0) has no callback for it, keeps
// it in a field of its own (the State of the memberlist.Node it hands out
// is never set), and its Members returns pointers it rewrites in place
// without a lock the caller can take (hashicorp/memberlist#306). A member
// memberlist suspects is reported alive until it is declared dead; how
// long that takes is what Config's suspicion settings bound.
type MemberState string

// Member states.
const (
	// MemberAlive answers probes, or has not yet been declared dead.
	MemberAlive MemberState = "alive"
	// MemberDead was declared dead by the cluster: crashed, partitioned or
	// shut down without leaving.
	MemberDead MemberState = "dead"
	// MemberLeft said goodbye (Run's ctx ended, or Leave).
	MemberLeft MemberState = "left"
)

// Member is one member as this one sees it.
type Member struct {
	Name string
	// Addr is the member's gossip address.
	Addr  netip.AddrPort
	Meta  NodeMeta
	State MemberState
}

// NodeEventType is what happened to a member.
type NodeEventType uint8

// Node event types.
const (
	// NodeJoin: a member appeared, or came back after being dead or left.
	// Its ready endpoints follow as EndpointReady events.
	NodeJoin NodeEventType = iota + 1
	// NodeUpdate: a member's metadata changed. A new epoch in it (a
	// restart too quick to be seen as a death) comes with EndpointGone for
	// the endpoints of its earlier life.
	NodeUpdate
	// NodeDead: the cluster declared a member dead. Drop every endpoint
	// whose Node is Member.Name at once: no EndpointGone follows.
	NodeDead
	// NodeLeft: a member left on purpose. As for NodeDead, drop its
	// endpoints; no EndpointGone follows.
	NodeLeft
)

// String returns "join", "update", "dead" or "left".
func (t NodeEventType) String() string {
	switch t {
	case NodeJoin:
		return "join"
	case NodeUpdate:
		return "update"
	case NodeDead:
		return "dead"
	case NodeLeft:
		return "left"
	}
	return fmt.Sprintf("NodeEventType(%d)", uint8(t))
}

// NodeEvent tells what happened to a member (never the local one).
type NodeEvent struct {
	Type   NodeEventType
	Member Member
}

// Handler receives what gossip learns. Gossip calls it from the goroutine
// that runs Gossip.Run, one call at a time, in the order things were
// learned; nothing is delivered while Run is not running (events wait in
// an unbounded queue). A handler should return promptly: gossip itself
// never waits for it, but later events wait behind a slow call and the
// queue grows. It may call any method of Gossip.
//
// A gateway keeps endpoints in a map keyed by EndpointKey: it sets one on
// EndpointReady, deletes it on EndpointGone, and deletes all of a node's on
// NodeDead and NodeLeft. An agent adds a route to Member.Meta.PodCIDR via
// Member.Meta.Address on NodeJoin and NodeUpdate and removes it on NodeDead
// and NodeLeft.
type Handler interface {
	// OnNode is called when a member joins, changes, dies or leaves.
	OnNode(NodeEvent)
	// OnEndpoint is called when an endpoint of an alive member
	// becomes ready, moves, or goes away — including this member's own
	// broadcasts. Every EndpointReady is eventually matched by an
	// EndpointGone or by a NodeDead/NodeLeft for its Node.
	OnEndpoint(EndpointEvent)
}
