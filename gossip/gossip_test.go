package gossip_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/gossip/gossiptest"
)

// TestLoopbackCluster runs real memberlist members on 127.0.0.1: they find
// each other, endpoint events reach every member, a late joiner gets the
// ready endpoints in the sync of its join, a member that stops without
// leaving is declared dead and its endpoints dropped, and one that leaves
// is reported as left.
func TestLoopbackCluster(t *testing.T) {
	a := start(t, testConfig(t, "a"))
	b := start(t, testConfig(t, "b"))
	c := start(t, testConfig(t, "c"))
	join(t, b, a)
	join(t, c, a)
	for _, m := range []*member{a, b, c} {
		waitFor(t, 10*time.Second, m.name+" to see a, b and c alive", func() bool { return seesAlive(m, "a", "b", "c") })
	}
	for _, m := range []*member{a, b, c} {
		for _, o := range []*member{a, b, c} {
			if o != m && !m.rec.HasNodeEvent(gossip.NodeJoin, o.name) {
				waitFor(t, 5*time.Second, m.name+" to be told "+o.name+" joined", func() bool { return m.rec.HasNodeEvent(gossip.NodeJoin, o.name) })
			}
		}
	}

	t.Log("an endpoint broadcast from a reaches b and c, and a's own handler")
	ep1 := endpoint("hello-00001-aaaaa", "10.244.1.5", 8080)
	if err := a.g.Broadcast(ep1); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	for _, m := range []*member{a, b, c} {
		d := waitFor(t, 5*time.Second, m.name+" to learn ep1", func() bool { return hasReady(m, ep1, "a") })
		t.Logf("%s learned ep1 after %v", m.name, d)
	}

	t.Log("a late joiner gets ep1 in the sync of its join")
	d := start(t, testConfig(t, "d"))
	if !holds(b.g.Endpoints(), ep1.Key()) {
		t.Fatalf("b, d's seed, lost ep1 (a falsely declared dead?): %v", b.rec.NodeEvents())
	}
	join(t, d, b)
	if !holds(d.g.Endpoints(), ep1.Key()) {
		t.Errorf("right after Join, d's endpoints are %v, want ep1 among them; b's node events: %v", d.g.Endpoints(), b.rec.NodeEvents())
	}
	waitFor(t, 5*time.Second, "d's handler to get ep1", func() bool { return hasReady(d, ep1, "a") })
	if got := d.rec.NodeEvents(); len(got) == 0 {
		t.Error("d was told of no member")
	}

	t.Log("a says ep1 is gone")
	gone := ep1
	gone.Type = gossip.EndpointGone
	gone.IP, gone.Port = netip.Addr{}, 0
	if err := a.g.Broadcast(gone); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	for _, m := range []*member{a, b, c, d} {
		waitFor(t, 5*time.Second, m.name+" to drop ep1", func() bool { _, ok := m.rec.Ready()[ep1.Key()]; return !ok })
	}

	t.Log("c serves ep2, then stops without leaving")
	ep2 := endpoint("hello-00001-ccccc", "10.244.3.9", 8080)
	if err := c.g.Broadcast(ep2); err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	for _, m := range []*member{a, b, d} {
		waitFor(t, 5*time.Second, m.name+" to learn ep2", func() bool { return hasReady(m, ep2, "c") })
	}
	if err := c.g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, m := range []*member{a, b, d} {
		took := waitFor(t, 15*time.Second, m.name+" to be told c is dead", func() bool { return m.rec.HasNodeEvent(gossip.NodeDead, "c") })
		t.Logf("%s was told c is dead %v after it stopped", m.name, took)
		if _, ok := m.rec.Ready()[ep2.Key()]; ok {
			t.Errorf("%s's handler still holds ep2 of dead c", m.name)
		}
		if holds(m.g.Endpoints(), ep2.Key()) {
			t.Errorf("%s.Endpoints still holds ep2 of dead c", m.name)
		}
	}
	var cState gossip.MemberState
	for _, mem := range a.g.Members() {
		if mem.Name == "c" {
			cState = mem.State
		}
	}
	if cState != gossip.MemberDead {
		t.Errorf("a.Members says c is %q, want dead; events %+v", cState, a.rec.NodeEvents())
	}

	t.Log("d leaves")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.g.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for _, m := range []*member{a, b} {
		waitFor(t, 5*time.Second, m.name+" to be told d left", func() bool { return m.rec.HasNodeEvent(gossip.NodeLeft, "d") })
	}
	if err := d.g.Broadcast(ep1); !errors.Is(err, gossip.ErrClosed) {
		t.Errorf("Broadcast after Leave = %v, want ErrClosed", err)
	}
}

func TestUpdateMetaReachesOthers(t *testing.T) {
	a := start(t, testConfig(t, "a"))
	b := start(t, testConfig(t, "b"))
	join(t, b, a)
	waitFor(t, 10*time.Second, "a to see b", func() bool { return seesAlive(a, "a", "b") })

	meta := gossip.NodeMeta{
		Address: netip.MustParseAddr("127.0.0.1"),
		PodCIDR: netip.MustParsePrefix("10.244.2.0/24"),
		APIPort: 7071,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.g.UpdateMeta(ctx, meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	waitFor(t, 5*time.Second, "a to be told b's pod CIDR", func() bool {
		for _, ev := range a.rec.NodeEvents() {
			if ev.Type == gossip.NodeUpdate && ev.Member.Name == "b" && ev.Member.Meta.PodCIDR == meta.PodCIDR {
				return true
			}
		}
		return false
	})
	for _, m := range a.g.Members() {
		if m.Name == "b" && (m.Meta.PodCIDR != meta.PodCIDR || m.Meta.Role != gossip.RoleAgent || m.Meta.APIPort != 7071) {
			t.Errorf("a.Members has b's meta %+v", m.Meta)
		}
	}
	if got := b.g.LocalNode().Meta.PodCIDR; got != meta.PodCIDR {
		t.Errorf("b.LocalNode PodCIDR = %v, want %v", got, meta.PodCIDR)
	}

	bad := meta
	bad.PodCIDR = netip.MustParsePrefix("10.244.2.1/24")
	if err := b.g.UpdateMeta(ctx, bad); err == nil {
		t.Error("UpdateMeta accepted a pod CIDR with host bits")
	}
}

// TestOutsidersCannotJoin: a member with another gossip key, or the
// right key but another label, is refused both ways and
// never shows up in the cluster.
func TestOutsidersCannotJoin(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*gossip.Config)
	}{
		{"other key", func(c *gossip.Config) { c.Key = otherKey }},
		{"other label", func(c *gossip.Config) { c.Label = "other-cluster" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := start(t, testConfig(t, "a"))
			b := start(t, testConfig(t, "b"))
			join(t, b, a)
			cfg := testConfig(t, "outsider")
			tt.setup(&cfg)
			x := start(t, cfg)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if n, err := x.g.Join(ctx, []string{a.addr}); !errors.Is(err, gossip.ErrJoin) || n != 0 {
				t.Errorf("outsider joins a: %d, %v; want 0, ErrJoin", n, err)
			}
			if n, err := a.g.Join(ctx, []string{x.addr}); !errors.Is(err, gossip.ErrJoin) || n != 0 {
				t.Errorf("a joins the outsider: %d, %v; want 0, ErrJoin", n, err)
			}
			// Let a few probe and gossip rounds pass, then look again.
			if err := x.g.Broadcast(endpoint("evil-1", "10.244.9.9", 80)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "a and b to see each other", func() bool { return seesAlive(a, "a", "b") && seesAlive(b, "a", "b") })
			for _, m := range []*member{a, b} {
				for _, mem := range m.g.Members() {
					if mem.Name == "outsider" {
						t.Errorf("%s sees the outsider as %s", m.name, mem.State)
					}
				}
				if eps := m.g.Endpoints(); len(eps) > 0 {
					t.Errorf("%s took endpoints from the outsider: %v", m.name, eps)
				}
			}
			if got := aliveNames(x); len(got) != 1 {
				t.Errorf("the outsider sees %v", got)
			}
		})
	}
}

// TestRestartedMemberForgetsEarlierLife runs on the in-memory network: an
// agent that crashes and comes back at once under the same name and
// address (too soon to be declared dead) must not leave its old endpoints
// behind at the others.
func TestRestartedMemberForgetsEarlierLife(t *testing.T) {
	var network gossiptest.Network
	cfgFor := func(name string, tr *gossiptest.Transport) gossip.Config {
		cfg := testConfig(t, name)
		cfg.Transport = tr
		cfg.SuspicionMult = 10 // the restart must beat the dead declaration
		return cfg
	}
	a := start(t, cfgFor("a", network.NewTransport()))
	tr := network.NewTransport()
	x := start(t, cfgFor("x", tr))
	join(t, x, a)
	old := endpoint("hello-00001-old", "10.244.5.5", 8080)
	if err := x.g.Broadcast(old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to learn x's endpoint", func() bool { return hasReady(a, old, "x") })

	if err := x.g.Close(); err != nil {
		t.Fatal(err)
	}
	tr2, err := network.NewTransportAt(tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	x2 := start(t, cfgFor("x", tr2))
	join(t, x2, a)
	waitFor(t, 10*time.Second, "a to drop x's endpoint of its earlier life", func() bool {
		_, ok := a.rec.Ready()[old.Key()]
		return !ok && !holds(a.g.Endpoints(), old.Key())
	})
	if a.rec.HasNodeEvent(gossip.NodeDead, "x") {
		t.Log("x was declared dead before it came back; the test meant to beat that")
	}
	fresh := endpoint("hello-00001-new", "10.244.5.6", 8080)
	if err := x2.g.Broadcast(fresh); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to learn x's new endpoint", func() bool { return hasReady(a, fresh, "x") })
}

// TestPartitionedMemberComesBack runs on the in-memory network: a member
// cut off is declared dead and its endpoints dropped; when
// the network heals it refutes, and the others show its endpoints again.
func TestPartitionedMemberComesBack(t *testing.T) {
	var network gossiptest.Network
	members := map[string]*member{}
	for _, name := range []string{"a", "b", "x"} {
		cfg := testConfig(t, name)
		cfg.Transport = network.NewTransport()
		members[name] = start(t, cfg)
	}
	a, b, x := members["a"], members["b"], members["x"]
	join(t, b, a)
	join(t, x, a)
	for _, m := range []*member{a, b, x} {
		waitFor(t, 10*time.Second, m.name+" to see everyone", func() bool { return seesAlive(m, "a", "b", "x") })
	}
	ep := endpoint("hello-00001-xxxxx", "10.244.7.7", 8080)
	if err := x.g.Broadcast(ep); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{a, b} {
		waitFor(t, 5*time.Second, m.name+" to learn x's endpoint", func() bool { return hasReady(m, ep, "x") })
	}

	network.Isolate(x.addr, true)
	for _, m := range []*member{a, b} {
		waitFor(t, 15*time.Second, m.name+" to declare x dead", func() bool { return m.rec.HasNodeEvent(gossip.NodeDead, "x") })
		if hasReady(m, ep, "x") {
			t.Errorf("%s still routes to dead x", m.name)
		}
	}
	joinsBefore := countNodeEvents(a.rec, gossip.NodeJoin, "x")

	network.Isolate(x.addr, false)
	waitFor(t, 20*time.Second, "a to see x back", func() bool { return countNodeEvents(a.rec, gossip.NodeJoin, "x") > joinsBefore })
	waitFor(t, 5*time.Second, "a to route to x again", func() bool { return hasReady(a, ep, "x") })
}

func countNodeEvents(r *gossiptest.Recorder, typ gossip.NodeEventType, name string) int {
	n := 0
	for _, ev := range r.NodeEvents() {
		if ev.Type == typ && ev.Member.Name == name {
			n++
		}
	}
	return n
}

func TestBroadcastRejectsBadEvents(t *testing.T) {
	a := start(t, testConfig(t, "a"))
	tests := []struct {
		name string
		ev   gossip.EndpointEvent
	}{
		{"no type", gossip.EndpointEvent{Namespace: "default", Replica: "r"}},
		{"ready without address", gossip.EndpointEvent{Type: gossip.EndpointReady, Namespace: "default", Replica: "r"}},
		{"no replica", gossip.EndpointEvent{Type: gossip.EndpointGone, Namespace: "default"}},
		{"too long", func() gossip.EndpointEvent {
			e := endpoint("r", "10.0.0.1", 80)
			e.Function = strings.Repeat("f", 2000)
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := a.g.Broadcast(tt.ev); !errors.Is(err, gossip.ErrInvalidEvent) {
				t.Errorf("Broadcast = %v, want ErrInvalidEvent", err)
			}
		})
	}
}

// callbackHandler calls back into its Gossip from every event, as the
// Handler contract allows.
type callbackHandler struct {
	gossiptest.Recorder
	g     atomic.Pointer[gossip.Gossip]
	calls atomic.Int64
}

func (h *callbackHandler) OnEndpoint(ev gossip.EndpointEvent) {
	h.Recorder.OnEndpoint(ev)
	if g := h.g.Load(); g != nil {
		_ = g.Members()
		_ = g.Endpoints()
		_ = g.LocalNode()
		if ev.Node == g.LocalNode().Name {
			return
		}
		// Answer a remote endpoint with one of our own, from the handler.
		reply := endpoint("reply-to-"+ev.Replica, "10.244.8.8", 8080)
		if err := g.Broadcast(reply); err != nil {
			panic(err)
		}
		h.calls.Add(1)
	}
}

func TestHandlerMayCallBack(t *testing.T) {
	var network gossiptest.Network
	cfgA := testConfig(t, "a")
	cfgA.Transport = network.NewTransport()
	h := &callbackHandler{}
	ga, err := gossip.New(cfgA, h)
	if err != nil {
		t.Fatal(err)
	}
	h.g.Store(ga)
	a := run(t, "a", ga, &h.Recorder)
	cfgB := testConfig(t, "b")
	cfgB.Transport = network.NewTransport()
	b := start(t, cfgB)
	join(t, b, a)

	ep := endpoint("hello-00001-bbbbb", "10.244.2.2", 8080)
	if err := b.g.Broadcast(ep); err != nil {
		t.Fatal(err)
	}
	reply := endpoint("reply-to-"+ep.Replica, "10.244.8.8", 8080)
	waitFor(t, 5*time.Second, "b to get a's reply, sent from a's handler", func() bool { return hasReady(b, reply, "a") })
	if h.calls.Load() == 0 {
		t.Error("a's handler never called back")
	}
}
