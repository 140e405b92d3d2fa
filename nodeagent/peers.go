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
type Peers struct {
	self string
	log  *slog.Logger

	mu     sync.Mutex
	g      *gossip.Gossip
	router PeerRouter
	routes map[string]route // by node name
}

type route struct {
	subnet netip.Prefix
	via    netip.Addr
}

// NewPeers returns Peers for the node named self.
func NewPeers(self string, log *slog.Logger) *Peers {
	return &Peers{self: self, log: log.With("component", "peers"), routes: map[string]route{}}
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

// SetRouter gives Peers the network once the runtime exists, and applies
// the routes learned before it did.
func (p *Peers) SetRouter(r PeerRouter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.router = r
	for node, rt := range p.routes {
		p.add(node, rt)
	}
}

func (p *Peers) add(node string, rt route) {
	if p.router == nil {
		return
	}
	if err := p.router.AddPeerRoute(rt.subnet, rt.via); err != nil {
		p.log.Warn("route to peer subnet", "node", node, "subnet", rt.subnet, "via", rt.via, "err", err)
	}
}

// OnNode implements gossip.Handler: a route to each alive agent's subnet
// through its address.
func (p *Peers) OnNode(ev gossip.NodeEvent) {
	m := ev.Member
	if m.Name == p.self || m.Meta.Role != gossip.RoleAgent {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.routes[m.Name]
	switch ev.Type {
	case gossip.NodeJoin, gossip.NodeUpdate:
		rt := route{subnet: m.Meta.PodCIDR, via: m.Meta.Address}
		if !rt.subnet.IsValid() || !rt.via.IsValid() || rt.via.IsLoopback() || rt.via.IsUnspecified() {
			return // host networking, or a peer on this same machine
		}
		if had && old == rt {
			return
		}
		if had && p.router != nil {
			_ = p.router.RemovePeerRoute(old.subnet, old.via)
		}
		p.routes[m.Name] = rt
		p.add(m.Name, rt)
	case gossip.NodeDead, gossip.NodeLeft:
		if had {
			delete(p.routes, m.Name)
			if p.router != nil {
				if err := p.router.RemovePeerRoute(old.subnet, old.via); err != nil {
					p.log.Warn("remove route to peer subnet", "node", m.Name, "err", err)
				}
			}
		}
	}
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
