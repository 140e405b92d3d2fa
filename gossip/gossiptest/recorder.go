package gossiptest

import (
	"maps"
	"slices"
	"sync"

	"github.com/surgeplatform/surge/gossip"
)

// Recorder is a gossip.Handler that records every event and keeps the
// endpoint set a gateway would build from them: Ready sets, Gone deletes,
// NodeDead and NodeLeft delete all of a node's. Its methods are safe for
// concurrent use and return copies.
type Recorder struct {
	mu        sync.Mutex
	nodes     []gossip.NodeEvent
	endpoints []gossip.EndpointEvent
	ready     map[gossip.EndpointKey]gossip.EndpointEvent
}

var _ gossip.Handler = (*Recorder)(nil)

// OnNode implements gossip.Handler.
func (r *Recorder) OnNode(ev gossip.NodeEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes = append(r.nodes, ev)
	if ev.Type == gossip.NodeDead || ev.Type == gossip.NodeLeft {
		maps.DeleteFunc(r.ready, func(_ gossip.EndpointKey, e gossip.EndpointEvent) bool {
			return e.Node == ev.Member.Name
		})
	}
}

// OnEndpoint implements gossip.Handler.
func (r *Recorder) OnEndpoint(ev gossip.EndpointEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints = append(r.endpoints, ev)
	if r.ready == nil {
		r.ready = map[gossip.EndpointKey]gossip.EndpointEvent{}
	}
	switch ev.Type {
	case gossip.EndpointReady:
		r.ready[ev.Key()] = ev
	case gossip.EndpointGone:
		delete(r.ready, ev.Key())
	}
}

// NodeEvents returns the node events so far, oldest first.
func (r *Recorder) NodeEvents() []gossip.NodeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.nodes)
}

// EndpointEvents returns the endpoint events so far, oldest first.
func (r *Recorder) EndpointEvents() []gossip.EndpointEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.endpoints)
}

// Ready returns the endpoint set built from the events.
func (r *Recorder) Ready() map[gossip.EndpointKey]gossip.EndpointEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.ready)
}

// HasNodeEvent reports whether a node event of typ about member was seen.
func (r *Recorder) HasNodeEvent(typ gossip.NodeEventType, member string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.nodes, func(ev gossip.NodeEvent) bool {
		return ev.Type == typ && ev.Member.Name == member
	})
}
