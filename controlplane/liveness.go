package controlplane

import (
	"sync"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/gossip"
)

// liveness is the control plane's view of node agents from gossip: the
// node controller declares a node dead as soon as gossip does, instead of
// waiting for its heartbeats to time out. It is the server member's
// gossip.Handler.
type liveness struct {
	mu     sync.Mutex
	states map[string]api.NodeState
	// changed is signalled (without blocking) on every change, to wake
	// the controllers.
	changed chan struct{}
}

func newLiveness() *liveness {
	return &liveness{states: map[string]api.NodeState{}, changed: make(chan struct{}, 1)}
}

var _ gossip.Handler = (*liveness)(nil)

// OnNode implements gossip.Handler.
func (l *liveness) OnNode(ev gossip.NodeEvent) {
	if ev.Member.Meta.Role != gossip.RoleAgent {
		return
	}
	st := api.NodeAlive
	if ev.Type == gossip.NodeDead || ev.Type == gossip.NodeLeft {
		st = api.NodeDead
	}
	l.mu.Lock()
	l.states[ev.Member.Name] = st
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// OnEndpoint implements gossip.Handler; the control plane learns endpoints
// from etcd.
func (l *liveness) OnEndpoint(gossip.EndpointEvent) {}

// State implements controllers.Liveness.
func (l *liveness) State(node string) (api.NodeState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.states[node]
	return st, ok
}
