package nodeagent

import (
	"log/slog"
	"net/netip"
	"sync"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/gossip"
)

// PeerRouter adds and removes routes to peer nodes' pod subnets (host-
// gateway routing: no overlay, no NAT on the request path). The runtime's
// network implements it. Its methods may block briefly on netlink.
type PeerRouter interface {
	AddPeerRoute(subnet netip.Prefix, via netip.Addr) error
	RemovePeerRoute(subnet netip.Prefix, via netip.Addr) error
}

// Peers connects the agent to gossip: it announces the agent's endpoints
// (Announcer) and, as the member's gossip.Handler, routes to the subnets of
// the nodes gossip reports.
//
// A route is installed only where gossip and the control plane agree: the
// subnet and address a member announces must be the pod subnet etcd gave
// that node and the address it registered (SetAssigned, from a watch of
// the nodes). Any holder of the join token can gossip; a member that
// claims another node's subnet, or 0.0.0.0/1, routes nothing.
type Peers struct {
	self string
	log  *slog.Logger

	mu     sync.Mutex
	g      *gossip.Gossip
	router PeerRouter
	// claimed is what gossip says of each alive agent, assigned what the
	// control plane does, installed the routes in place: the claims that
	// match their assignment.
	claimed, assigned, installed map[string]route
}

type route struct {
	subnet netip.Prefix
	via    netip.Addr
}

// NewPeers returns Peers for the node named self.
func NewPeers(self string, log *slog.Logger) *Peers {
	return &Peers{self: self, log: log.With("component", "peers"),
		claimed: map[string]route{}, assigned: map[string]route{}, installed: map[string]route{}}
}

var (
	_ Announcer      = (*Peers)(nil)
	_ gossip.Handler = (*Peers)(nil)
)

// SetGossip gives Peers the member to broadcast through (made after Peers,
// as Peers is its handler).
func (p *Peers) SetGossip(g *gossip.Gossip) {
	p.mu.Lock()
	p.g = g
	p.mu.Unlock()
}

// SetRouter gives Peers the network once the runtime exists, and installs
// the routes learned before it did.
func (p *Peers) SetRouter(r PeerRouter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.router = r
	for node := range p.claimed {
		p.reconcile(node)
	}
}

// SetAssigned records what the control plane gave a node: its pod subnet
// and its registered address (ok false when the node is gone, or has
// neither yet). It may be called from any goroutine.
func (p *Peers) SetAssigned(node string, subnet netip.Prefix, via netip.Addr, ok bool) {
	if node == p.self {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.assigned[node] = route{subnet: subnet, via: via}
	} else {
		delete(p.assigned, node)
	}
	p.reconcile(node)
}

// reconcile makes a node's route what its claim and assignment agree on:
// installed when they match, removed otherwise. p.mu must be held.
func (p *Peers) reconcile(node string) {
	want, claimed := p.claimed[node]
	if a, ok := p.assigned[node]; claimed && (!ok || a != want) {
		if ok { // a claim the control plane did not make: say so once
			p.log.Warn("gossip claims a route the control plane did not assign; not routing it",
				"node", node, "claimed", want.subnet, "via", want.via, "assigned", a.subnet, "address", a.via)
		}
		claimed = false
	}
	have, installed := p.installed[node]
	if installed && (!claimed || have != want) {
		delete(p.installed, node)
		if p.router != nil {
			if err := p.router.RemovePeerRoute(have.subnet, have.via); err != nil {
				p.log.Warn("remove route to peer subnet", "node", node, "err", err)
			}
		}
		installed = false
	}
	if claimed && !installed && p.router != nil {
		if err := p.router.AddPeerRoute(want.subnet, want.via); err != nil {
			p.log.Warn("route to peer subnet", "node", node, "subnet", want.subnet, "via", want.via, "err", err)
			return
		}
		p.installed[node] = want
	}
}

// OnNode implements gossip.Handler: an alive agent's claim of a subnet
// and address, routed once the control plane agrees (see Peers).
func (p *Peers) OnNode(ev gossip.NodeEvent) {
	m := ev.Member
	if m.Name == p.self || m.Meta.Role != gossip.RoleAgent {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case gossip.NodeJoin, gossip.NodeUpdate:
		rt := route{subnet: m.Meta.PodCIDR, via: m.Meta.Address}
		if !rt.subnet.IsValid() || !rt.via.IsValid() || rt.via.IsLoopback() || rt.via.IsUnspecified() {
			delete(p.claimed, m.Name) // host networking, or a peer on this same machine
		} else {
			p.claimed[m.Name] = rt
		}
	case gossip.NodeDead, gossip.NodeLeft:
		delete(p.claimed, m.Name)
	}
	p.reconcile(m.Name)
}

// OnEndpoint implements gossip.Handler; agents route by subnet, not by
// endpoint, so they ignore endpoint events.
func (p *Peers) OnEndpoint(gossip.EndpointEvent) {}

// EndpointReady implements Announcer.
func (p *Peers) EndpointReady(r *api.Replica) { p.broadcast(gossip.EndpointReady, r) }

// EndpointGone implements Announcer.
func (p *Peers) EndpointGone(r *api.Replica) { p.broadcast(gossip.EndpointGone, r) }

func (p *Peers) broadcast(t gossip.EndpointEventType, r *api.Replica) {
	p.mu.Lock()
	g := p.g
	p.mu.Unlock()
	if g == nil {
		return
	}
	ev := gossip.EndpointEvent{Type: t, Namespace: r.Metadata.Namespace, Function: r.Spec.Function,
		Revision: r.Spec.Revision, Replica: r.Metadata.Name}
	if t == gossip.EndpointReady {
		ip, err := netip.ParseAddr(r.Status.IP)
		if err != nil || r.Status.Port <= 0 {
			return
		}
		ev.IP, ev.Port = ip, uint16(r.Status.Port)
	}
	if err := g.Broadcast(ev); err != nil {
		p.log.Warn("broadcast endpoint", "replica", r.Metadata.Name, "err", err)
	}
}
