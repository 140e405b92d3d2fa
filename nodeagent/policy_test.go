package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/network"
)

func TestPolicyInput(t *testing.T) {
	node := func(name, subnet, addr string) *api.Node {
		return &api.Node{Metadata: api.ObjectMeta{Name: name}, Spec: api.NodeSpec{PodSubnet: subnet},
			Status: api.NodeStatus{Address: addr}}
	}
	nodes := map[string]*api.Node{
		"n1": node("n1", "10.244.1.0/24", "10.0.0.1"), // this node
		"n2": node("n2", "10.244.2.0/24", "10.0.0.2"),
		"n3": node("n3", "", "10.0.0.3"),               // no subnet yet
		"n4": node("n4", "10.244.4.0/24", "127.0.0.1"), // an agent on this same machine
		"n5": node("n5", "10.244.5.0/24", ""),
	}
	replica := func(ns, name, fn, node, ip string, phase api.ReplicaPhase) *api.Replica {
		return &api.Replica{Metadata: api.ObjectMeta{Namespace: ns, Name: name},
			Spec: api.ReplicaSpec{Function: fn, NodeName: node}, Status: api.ReplicaStatus{IP: ip, Phase: phase}}
	}
	reps := map[api.Key]*api.Replica{}
	for _, r := range []*api.Replica{
		replica("default", "hello-00001-a", "hello", "n1", "10.244.1.5", api.ReplicaReady),
		replica("", "hello-00001-b", "hello", "n2", "10.244.2.7", api.ReplicaStarting),
		replica("team", "hello-00001-c", "hello", "n2", "10.244.2.8", api.ReplicaTerminating),
		// An address on another node than the replica's: a forged status.
		replica("default", "probe-00001-d", "probe", "n2", "10.244.1.9", api.ReplicaReady),
		replica("default", "probe-00001-e", "probe", "n1", "10.244.1.6", api.ReplicaFailed),
		replica("default", "probe-00001-f", "probe", "n3", "10.244.3.3", api.ReplicaReady),
		replica("default", "probe-00001-g", "probe", "", "", api.ReplicaPending),
		replica("default", "probe-00001-h", "probe", "n1", "", api.ReplicaStarting),
		replica("default", "probe-00001-i", "probe", "n9", "10.244.1.10", api.ReplicaReady),
		replica("default", "probe-00001-j", "probe", "n1", "127.0.0.1", api.ReplicaReady), // host networking
	} {
		reps[api.KeyOf(r)] = r
	}
	base := network.PolicyInput{Bridge: "surge0", Subnet: netip.MustParsePrefix("10.244.1.0/24"), GatewayPorts: []uint16{8080}}
	got := policyInput(base, "n1", nodes, reps)
	want := base
	want.PodSubnets = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24"),
		netip.MustParsePrefix("10.244.4.0/24"), netip.MustParsePrefix("10.244.5.0/24")}
	want.Peers = []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}
	want.Replicas = []network.ReplicaAddr{
		{IP: netip.MustParseAddr("10.244.1.5"), Function: "default/hello"},
		{IP: netip.MustParseAddr("10.244.2.7"), Function: "default/hello"},
		{IP: netip.MustParseAddr("10.244.2.8"), Function: "team/hello"},
	}
	sorted := cmp.Options{
		cmpopts.SortSlices(func(a, b netip.Prefix) bool { return a.Addr().Less(b.Addr()) }),
		cmpopts.SortSlices(func(a, b netip.Addr) bool { return a.Less(b) }),
		cmpopts.SortSlices(func(a, b network.ReplicaAddr) bool { return a.IP.Less(b.IP) }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	}
	if diff := cmp.Diff(want, got, sorted); diff != "" {
		t.Errorf("policyInput (-want +got):\n%s", diff)
	}
}

func TestNameservers(t *testing.T) {
	conf := []byte("# from DHCP\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n#nameserver 1.1.1.1\nsearch example.com\nnameserver 169.254.169.254\nnameserver bogus\n")
	got := nameservers(conf)
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("169.254.169.254")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("nameservers (-want +got):\n%s", diff)
	}
}

func TestPolicyConfigValidate(t *testing.T) {
	if err := DefaultPolicyConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	err := PolicyConfig{GatewayPorts: []uint16{8080, 0}, Resync: -time.Second}.Validate()
	if err == nil {
		t.Fatal("bad config: nil error")
	}
	for _, w := range []string{"gateway ports", "policy resync"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %q, want it to name %s", err, w)
		}
	}
}

// fakeFirewall records what the policy applies.
type fakeFirewall struct {
	mu      sync.Mutex
	applied []network.Policy
	removed int
}

func (f *fakeFirewall) Apply(_ context.Context, p network.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, p)
	return nil
}

func (f *fakeFirewall) Remove(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	return nil
}

func (f *fakeFirewall) state() (last network.Policy, applies, removes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applied) > 0 {
		last = f.applied[len(f.applied)-1]
	}
	return last, len(f.applied), f.removed
}

// fakeNetwork is a CNI network with the given replicas attached.
type fakeNetwork struct{ left []network.Attachment }

func (n fakeNetwork) Mode() network.Mode                         { return network.ModeCNI }
func (n fakeNetwork) Attachments() ([]network.Attachment, error) { return n.left, nil }

// TestReplicaPolicyFollowsTheCluster runs the policy against a real
// control plane, playing two nodes' agents: the rules follow the
// replicas the scheduler binds and the addresses their agents report, are
// rewritten whole every Resync, and are removed on stop only when no
// replica is left on the node.
func TestReplicaPolicyFollowsTheCluster(t *testing.T) {
	in := controlplanetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := in.Client()
	defer closeIdleConnections(admin)
	// The two agents' writes are the admin's here: nodes at 10.0.0.x could
	// not join from this machine (see the node identity tests).
	nodeAPI := admin

	// Two nodes, kept alive by their leases.
	subnets := map[string]netip.Prefix{}
	for i, name := range []string{"n1", "n2"} {
		cfg := DefaultConfig()
		cfg.NodeName, cfg.Address = name, fmt.Sprintf("10.0.0.%d", i+1)
		cfg.MilliCPU, cfg.MemoryBytes = 4000, 8<<30
		n, err := register(ctx, nodeAPI, cfg)
		if err != nil {
			t.Fatal(err)
		}
		subnets[name] = netip.MustParsePrefix(n.Spec.PodSubnet)
	}
	beat, stopBeat := context.WithCancel(ctx)
	var beats sync.WaitGroup
	beats.Go(func() {
		for clock.Sleep(beat, clock.Real(), 200*time.Millisecond) {
			for _, name := range []string{"n1", "n2"} {
				_, _ = renewLease(beat, nodeAPI, name)
			}
		}
	})
	defer func() { stopBeat(); beats.Wait() }()

	o := DefaultOptions()
	o.Client = *in.AdminConfig()
	o.Agent.NodeName = "n1"
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	clk := clock.NewFake()
	o.Clock = clk
	o = o.withDefaults()
	fw := &fakeFirewall{}
	peers := NewPeers("n1", o.Log)
	newPolicy := func() *replicaPolicy {
		p := newReplicaPolicy(o, nodeAPI, peers)
		p.newFirewall = func(bridge string) (firewall, error) { return fw, nil }
		p.nameservers = func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.0.0.53")} }
		return p
	}
	self := &api.Node{Metadata: api.ObjectMeta{Name: "n1"}, Spec: api.NodeSpec{PodSubnet: subnets["n1"].String()}}
	p := newPolicy()
	running := fakeNetwork{left: []network.Attachment{{ID: "hello-00001-x"}}}
	if err := p.start(ctx, self, running); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.stop()
		}
	}()
	if _, applies, _ := fw.state(); applies != 1 {
		t.Fatalf("start applied %d policies, want one before it returns", applies)
	}
	// The same watch of the nodes tells Peers what n2 was assigned.
	peers.mu.Lock()
	assigned := peers.assigned["n2"]
	peers.mu.Unlock()
	if assigned.subnet != subnets["n2"] || assigned.via != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("peers learned n2 is %v via %v, want %v via 10.0.0.2", assigned.subnet, assigned.via, subnets["n2"])
	}

	// Two functions; the agents report their replicas' addresses.
	for fn, n := range map[string]int32{"hello": 2, "probe": 2} {
		f := &api.Function{Metadata: api.ObjectMeta{Name: fn}, Spec: api.FunctionSpec{Image: "example.test/" + fn + ":v1"}}
		f.Spec.Scaling.MinScale = n
		if _, err := admin.PutFunction(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	var reps []api.Replica
	waitFor(t, "four replicas bound to n1 and n2", func() (bool, string) {
		l, err := client.List[api.Replica](ctx, admin, "", nil)
		if err != nil {
			return false, err.Error()
		}
		reps = l.Items
		bound := 0
		for _, r := range reps {
			if r.Spec.NodeName != "" {
				bound++
			}
		}
		return len(reps) == 4 && bound == 4, fmt.Sprintf("%+v", reps)
	})
	want := network.PolicyInput{
		Bridge: "surge0", Subnet: subnets["n1"], PodSubnets: []netip.Prefix{subnets["n1"], subnets["n2"]},
		Peers: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, GatewayPorts: []uint16{8080},
		Nameservers: []netip.Addr{netip.MustParseAddr("10.0.0.53")},
	}
	next := map[string]netip.Addr{}
	for i := range reps {
		r := &reps[i]
		a, ok := next[r.Spec.NodeName]
		if !ok {
			a = subnets[r.Spec.NodeName].Addr().Next().Next()
		}
		next[r.Spec.NodeName] = a.Next()
		r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: a.String(), Port: 8080}
		if err := nodeAPI.Do(ctx, "PUT", client.ObjectPath[api.Replica](api.KeyOf(r))+"/status", r, nil); err != nil {
			t.Fatal(err)
		}
		want.Replicas = append(want.Replicas, network.ReplicaAddr{IP: a, Function: "default/" + r.Spec.Function})
	}
	waitForPolicy := func(what string, want network.PolicyInput) {
		t.Helper()
		waitFor(t, what, func() (bool, string) {
			last, _, _ := fw.state()
			diff := cmp.Diff(network.BuildPolicy(want), last)
			return diff == "", diff
		})
	}
	waitForPolicy("the replicas' addresses in the rules", want)

	// Resync: the same rules written again, though nothing changed.
	_, before, _ := fw.state()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(o.Policy.Resync)
	waitFor(t, "a rewrite after Resync", func() (bool, string) {
		_, n, _ := fw.state()
		return n > before, fmt.Sprintf("%d applies", n)
	})

	// A function goes: its replicas leave the rules.
	if err := client.Delete[api.Function](ctx, admin, api.Key{Namespace: "default", Name: "probe"}); err != nil {
		t.Fatal(err)
	}
	var kept []network.ReplicaAddr
	for _, r := range want.Replicas {
		if r.Function == "default/hello" {
			kept = append(kept, r)
		}
	}
	want.Replicas = kept
	waitForPolicy("probe's addresses out of the rules", want)

	// An agent that leaves replicas running leaves the rules for them;
	// one that leaves none removes them.
	p.stop()
	stopped = true
	if _, _, removes := fw.state(); removes != 0 {
		t.Errorf("stop with replicas left running removed the policy")
	}
	p2 := newPolicy()
	if err := p2.start(ctx, self, fakeNetwork{}); err != nil {
		t.Fatal(err)
	}
	p2.stop()
	if _, _, removes := fw.state(); removes != 1 {
		t.Errorf("stop with no replica left: %d removes, want 1", removes)
	}
}

// TestReplicaPolicyNoneInHostMode: with host networking there is nothing
// to put a policy on, and stop does nothing.
func TestReplicaPolicyNoneInHostMode(t *testing.T) {
	o := DefaultOptions()
	o.Client.Server = "https://127.0.0.1:7070"
	o = o.withDefaults()
	p := newReplicaPolicy(o, nil, nil)
	p.newFirewall = func(string) (firewall, error) { return nil, errors.New("no firewall in host mode") }
	if err := p.start(context.Background(), &api.Node{}, hostNetwork{}); err != nil {
		t.Fatal(err)
	}
	p.stop()
}

type hostNetwork struct{}

func (hostNetwork) Mode() network.Mode                         { return network.ModeHost }
func (hostNetwork) Attachments() ([]network.Attachment, error) { return nil, nil }
