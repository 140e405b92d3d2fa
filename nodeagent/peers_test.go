package nodeagent

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/surgeplatform/surge/gossip"
)

// fakeRouter records the routes in place.
type fakeRouter struct{ routes []string }

func (f *fakeRouter) AddPeerRoute(subnet netip.Prefix, via netip.Addr) error {
	f.routes = append(f.routes, subnet.String()+" via "+via.String())
	slices.Sort(f.routes)
	return nil
}

func (f *fakeRouter) RemovePeerRoute(subnet netip.Prefix, via netip.Addr) error {
	f.routes = slices.DeleteFunc(f.routes, func(r string) bool { return r == subnet.String()+" via "+via.String() })
	return nil
}

func agentEvent(t gossip.NodeEventType, name, subnet, addr string) gossip.NodeEvent {
	return gossip.NodeEvent{Type: t, Member: gossip.Member{Name: name, Meta: gossip.NodeMeta{
		Name: name, Role: gossip.RoleAgent, PodCIDR: netip.MustParsePrefix(subnet), Address: netip.MustParseAddr(addr)}}}
}

// TestPeersRouteOnlyWhatTheControlPlaneAssigned: a route is installed
// only where gossip's claim matches the node's assignment in etcd; a
// member that claims another subnet (or a huge one) routes nothing, and a
// route goes when its node dies or its assignment changes.
func TestPeersRouteOnlyWhatTheControlPlaneAssigned(t *testing.T) {
	r := &fakeRouter{}
	p := NewPeers("self", slog.New(slog.DiscardHandler))
	p.SetRouter(r)
	want := func(step string, routes ...string) {
		t.Helper()
		if diff := cmp.Diff(routes, r.routes, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: routes (-want +got):\n%s", step, diff)
		}
	}

	p.OnNode(agentEvent(gossip.NodeJoin, "b", "10.244.1.0/24", "10.0.0.2"))
	want("a claim etcd has not confirmed")
	p.SetAssigned("b", netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("10.0.0.2"), true)
	want("claim and assignment agree", "10.244.1.0/24 via 10.0.0.2")

	p.OnNode(agentEvent(gossip.NodeJoin, "evil", "0.0.0.0/1", "10.0.0.9"))
	p.SetAssigned("evil", netip.MustParsePrefix("10.244.9.0/24"), netip.MustParseAddr("10.0.0.9"), true)
	want("a member claiming a subnet it was not given", "10.244.1.0/24 via 10.0.0.2")
	p.OnNode(agentEvent(gossip.NodeUpdate, "evil", "10.244.1.0/24", "10.0.0.9"))
	want("a member claiming another node's subnet", "10.244.1.0/24 via 10.0.0.2")

	p.SetAssigned("b", netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("10.0.0.3"), true)
	want("the node's address changed in etcd, not yet in gossip")
	p.OnNode(agentEvent(gossip.NodeUpdate, "b", "10.244.1.0/24", "10.0.0.3"))
	want("gossip caught up", "10.244.1.0/24 via 10.0.0.3")

	p.OnNode(agentEvent(gossip.NodeDead, "b", "10.244.1.0/24", "10.0.0.3"))
	want("the node died")
	p.OnNode(agentEvent(gossip.NodeJoin, "b", "10.244.1.0/24", "10.0.0.3"))
	want("it came back", "10.244.1.0/24 via 10.0.0.3")
	p.SetAssigned("b", netip.Prefix{}, netip.Addr{}, false)
	want("the node was deleted from the control plane")
}

// TestPeersInstallWhatWasLearnedBeforeTheRouter: claims and assignments
// learned before the network exists are routed once it does.
func TestPeersInstallWhatWasLearnedBeforeTheRouter(t *testing.T) {
	p := NewPeers("self", slog.New(slog.DiscardHandler))
	p.SetAssigned("b", netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("10.0.0.2"), true)
	p.OnNode(agentEvent(gossip.NodeJoin, "b", "10.244.1.0/24", "10.0.0.2"))
	p.OnNode(agentEvent(gossip.NodeJoin, "self", "10.244.0.0/24", "10.0.0.1"))
	r := &fakeRouter{}
	p.SetRouter(r)
	if diff := cmp.Diff([]string{"10.244.1.0/24 via 10.0.0.2"}, r.routes); diff != "" {
		t.Fatalf("routes (-want +got):\n%s", diff)
	}
}
