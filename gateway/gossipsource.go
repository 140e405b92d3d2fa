package gateway

import (
	"context"
	"net/netip"
	"sync"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/gossip"
)

// GossipSource feeds the routing state from gossip: a replica's endpoint
// is routed the moment its agent says it is ready, and every endpoint of a
// node that gossip declares dead is dropped at once, without waiting for
// etcd. Every member of gossip holds the key, gateways too: an endpoint it
// announces is routed only where it agrees with what the control plane
// assigned (State.gossipAgrees). It is both the gossip.Handler of the gateway's member and one of
// its RouteSources.
type GossipSource struct {
	mu      sync.Mutex
	pending []func(*State)
	wake    chan struct{}
}

// NewGossipSource returns a source to pass to gossip.Start as the
// member's Handler and to Deps.Sources.
func NewGossipSource() *GossipSource { return &GossipSource{wake: make(chan struct{}, 1)} }

var (
	_ RouteSource    = (*GossipSource)(nil)
	_ gossip.Handler = (*GossipSource)(nil)
)

// enqueue hands a change to Run; it never blocks, as gossip requires.
func (s *GossipSource) enqueue(fn func(*State)) {
	s.mu.Lock()
	s.pending = append(s.pending, fn)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// OnNode implements gossip.Handler.
func (s *GossipSource) OnNode(ev gossip.NodeEvent) {
	if ev.Type == gossip.NodeDead || ev.Type == gossip.NodeLeft {
		name := ev.Member.Name
		s.enqueue(func(st *State) { st.DeleteNode(name) })
	}
}

// OnEndpoint implements gossip.Handler.
func (s *GossipSource) OnEndpoint(ev gossip.EndpointEvent) {
	if ev.Type == gossip.EndpointGone {
		s.enqueue(func(st *State) { st.DeleteGossipEndpoint(ev.Namespace, ev.Replica, ev.Node) })
		return
	}
	e := EndpointInfo{
		Namespace: ev.Namespace, Replica: ev.Replica, Function: ev.Function, Revision: ev.Revision,
		Node: ev.Node, Addr: netip.AddrPortFrom(ev.IP, ev.Port).String(), Phase: api.ReplicaReady,
	}
	s.enqueue(func(st *State) { st.SetGossipEndpoint(e) })
}

// Run implements RouteSource: it applies the queued changes, a batch per
// Update, until ctx ends.
func (s *GossipSource) Run(ctx context.Context, u Updater) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		if len(batch) > 0 {
			u.Update(func(st *State) {
				for _, fn := range batch {
					fn(st)
				}
			})
		}
	}
}
