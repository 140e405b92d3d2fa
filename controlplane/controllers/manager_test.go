package controllers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// testTimeout bounds a wait for something that must happen; it is a bound
// on a hang, not a measurement.
const testTimeout = time.Minute

// fixture is a Manager on a real etcd with a fake clock; tests call Pass
// themselves, as the leader's loop would.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	clock *clock.Fake
	store *store.Store
	m     *Manager
}

func newFixture(t *testing.T, configure ...func(*Config)) *fixture {
	t.Helper()
	cfg := DefaultConfig()
	for _, c := range configure {
		c(&cfg)
	}
	clk := clock.NewFake()
	st := store.New(etcdtest.Start(t), clk)
	m, err := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)), clk, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: context.Background(), clock: clk, store: st, m: m}
}

func (f *fixture) pass() {
	f.t.Helper()
	if err := f.m.Pass(f.ctx); err != nil {
		f.t.Fatalf("pass: %v", err)
	}
}

// node registers an alive node that last beat at lastSeen.
func (f *fixture) node(name string, lastSeen time.Time) {
	f.t.Helper()
	n := &api.Node{
		Metadata: api.ObjectMeta{Name: name},
		Status: api.NodeStatus{State: api.NodeAlive, LastSeen: lastSeen,
			Allocatable: api.NodeResources{CPU: "2", Memory: "4Gi"}},
	}
	if _, err := f.store.CreateNode(f.ctx, n, netip.MustParsePrefix("10.244.0.0/16"), 24); err != nil {
		f.t.Fatalf("register node %s: %v", name, err)
	}
}

// deploy writes function hello with image and minScale, as `surge deploy`.
func (f *fixture) deploy(image string, minScale int32) {
	f.t.Helper()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: image}}
	fn.Spec.Scaling.MinScale = minScale
	api.SetDefaults(&fn.Spec)
	if _, err := f.store.PutFunction(f.ctx, fn, store.CreateOrReplace); err != nil {
		f.t.Fatalf("deploy %s: %v", image, err)
	}
}

func (f *fixture) replicas() []api.Replica {
	f.t.Helper()
	reps, _, err := store.List[api.Replica](f.ctx, f.store, store.Scope{})
	if err != nil {
		f.t.Fatal(err)
	}
	return reps
}

// placement is "revision@node" for every replica, sorted.
func (f *fixture) placement() []string {
	var out []string
	for _, r := range f.replicas() {
		out = append(out, r.Spec.Revision+"@"+r.Spec.NodeName)
	}
	slices.Sort(out)
	return out
}

// ready reports the replica of rev Ready, as its agent would.
func (f *fixture) ready(rev string) {
	f.t.Helper()
	for _, r := range f.replicas() {
		if r.Spec.Revision == rev && r.Spec.NodeName != "" {
			r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2", Port: 8080}
			r.Metadata.ResourceVersion = ""
			if _, err := store.UpdateReplicaStatus(f.ctx, f.store, &r); err != nil {
				f.t.Fatal(err)
			}
			return
		}
	}
	f.t.Fatalf("no bound replica of %s: %v", rev, f.placement())
}

func (f *fixture) traffic() string {
	f.t.Helper()
	tr, err := store.Get[api.Traffic](f.ctx, f.store, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		f.t.Fatal(err)
	}
	parts := make([]string, len(tr.Spec.Targets))
	for i, tt := range tr.Spec.Targets {
		parts[i] = fmt.Sprintf("{%s %d}", tt.Revision, tt.Percent)
		if tt.Tag != "" {
			parts[i] = fmt.Sprintf("{%s %d %s}", tt.Revision, tt.Percent, tt.Tag)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (f *fixture) setTraffic(targets ...api.TrafficTarget) {
	f.t.Helper()
	tr, err := store.Get[api.Traffic](f.ctx, f.store, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		f.t.Fatal(err)
	}
	tr.Spec.Targets = targets
	if _, err := store.Update(f.ctx, f.store, tr); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) latestReady() string {
	f.t.Helper()
	fn, err := store.Get[api.Function](f.ctx, f.store, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		f.t.Fatal(err)
	}
	return fn.Status.LatestReadyRevision
}

func (f *fixture) scaleStatus(rev string) api.ScaleStatus {
	f.t.Helper()
	sc, err := store.Get[api.Scale](f.ctx, f.store, api.Key{Namespace: "default", Name: rev})
	if err != nil {
		f.t.Fatal(err)
	}
	return sc.Status
}

func (f *fixture) nodeState(name string) api.NodeState {
	f.t.Helper()
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: name})
	if err != nil {
		f.t.Fatal(err)
	}
	return n.Status.State
}

func TestPassSpreadsReplicasAndCountsThem(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	f.node("node-b", f.clock.Now())
	f.deploy("example.test/hello:v1", 2)
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-a", "hello-00001@node-b"}, f.placement()); diff != "" {
		t.Fatalf("placement (-want +got):\n%s", diff)
	}
	if placed, made := testutil.ToFloat64(f.m.metrics.placements), testutil.ToFloat64(f.m.metrics.replicas.WithLabelValues("created")); placed != 2 || made != 2 {
		t.Errorf("placements %v, replicas created %v; want 2 and 2", placed, made)
	}
	if n := testutil.CollectAndCount(f.m.metrics.placementDuration); n != 1 {
		t.Errorf("%d placement histograms", n)
	}

	f.ready("hello-00001")
	f.pass()
	if got, want := f.scaleStatus("hello-00001"), (api.ScaleStatus{Replicas: 2, ReadyReplicas: 1}); got != want {
		t.Errorf("scale status %+v, want %+v", got, want)
	}

	// Scale down to one: the replica that is not ready goes first.
	var readyName string
	for _, r := range f.replicas() {
		if r.Status.Phase == api.ReplicaReady {
			readyName = r.Metadata.Name
		}
	}
	if _, err := store.SetScaleReplicas(f.ctx, f.store, api.Key{Namespace: "default", Name: "hello-00001"}, 2, 1); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if reps := f.replicas(); len(reps) != 1 || reps[0].Metadata.Name != readyName {
		t.Errorf("after scaling to one: %v, want only %s", f.placement(), readyName)
	}
	if got := testutil.ToFloat64(f.m.metrics.replicas.WithLabelValues("deleted")); got != 1 {
		t.Errorf("replicas deleted %v, want 1", got)
	}
}

func TestPassExplainsWhyAReplicaWaits(t *testing.T) {
	f := newFixture(t)
	f.deploy("example.test/hello:v1", 1)
	f.pass()
	reps := f.replicas()
	if len(reps) != 1 || reps[0].Spec.NodeName != "" || reps[0].Status.Message == "" {
		t.Fatalf("with no node: %+v, want one unbound replica with a message", reps)
	}
	if got := testutil.ToFloat64(f.m.metrics.placementFailures.WithLabelValues("unschedulable")); got != 1 {
		t.Errorf("unschedulable placements %v, want 1", got)
	}
	f.node("node-a", f.clock.Now())
	f.pass()
	reps = f.replicas()
	if len(reps) != 1 || reps[0].Spec.NodeName != "node-a" || reps[0].Status.Message != "" {
		t.Errorf("once a node joined: %+v, want it bound and its message cleared", reps)
	}
}

func TestPassReplacesTheReplicasOfAStaleNode(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeTimeout = 30 * time.Second })
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-a"}, f.placement()); diff != "" {
		t.Fatalf("placement (-want +got):\n%s", diff)
	}
	// node-b beats on; node-a stops.
	f.node("node-b", f.clock.Now().Add(time.Hour))

	f.clock.Advance(30 * time.Second)
	f.pass()
	if st := f.nodeState("node-a"); st != api.NodeAlive {
		t.Fatalf("node-a is %s after exactly its timeout, want alive", st)
	}
	f.clock.Advance(time.Second)
	f.pass()
	if st := f.nodeState("node-a"); st != api.NodeDead {
		t.Fatalf("node-a is %s past its timeout, want dead", st)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-b"}, f.placement()); diff != "" {
		t.Errorf("placement after node-a died (-want +got):\n%s", diff)
	}
}

// gossipSays is a Liveness with fixed answers.
type gossipSays map[string]api.NodeState

func (g gossipSays) State(node string) (api.NodeState, bool) {
	st, ok := g[node]
	return st, ok
}

// TestPassBelievesGossipOnlyOnceBeatsAreMissed: gossip's failure detector
// misfires on a starved machine; a node it calls dead keeps its replicas
// while its heartbeats are fresh, and loses them once LeaseConfirm passes
// without one, long before NodeTimeout.
func TestPassBelievesGossipOnlyOnceBeatsAreMissed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeTimeout, c.LeaseConfirm = time.Hour, 10*time.Second })
	f.m.UseLiveness(gossipSays{"node-a": api.NodeDead, "node-b": api.NodeAlive}, nil)
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	f.pass()
	f.pass()
	if st := f.nodeState("node-a"); st != api.NodeAlive {
		t.Fatalf("a node gossip calls dead but that just beat is %s, want alive", st)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-a"}, f.placement()); diff != "" {
		t.Fatalf("placement (-want +got):\n%s", diff)
	}
	f.node("node-b", f.clock.Now().Add(time.Hour))
	f.clock.Advance(11 * time.Second)
	f.pass()
	if st := f.nodeState("node-a"); st != api.NodeDead {
		t.Fatalf("node-a is %s once gossip's word is confirmed, want dead", st)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-b"}, f.placement()); diff != "" {
		t.Errorf("placement (-want +got):\n%s", diff)
	}
}

// TestPassJudgesNodesByTheirLease: a node's heartbeats renew its lease,
// not its status: a node whose status is an hour old but whose lease is
// fresh stays alive while gossip calls it dead, and is dead once its
// lease is older than LeaseConfirm.
func TestPassJudgesNodesByTheirLease(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeTimeout, c.LeaseConfirm = time.Hour, 3*time.Second })
	f.m.UseLiveness(gossipSays{"node-a": api.NodeDead}, nil)
	f.node("node-a", f.clock.Now().Add(-time.Hour))
	for range 5 {
		if _, err := f.store.RenewNodeLease(f.ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		f.pass()
		if st := f.nodeState("node-a"); st != api.NodeAlive {
			t.Fatalf("a node gossip calls dead but whose lease is fresh is %s, want alive", st)
		}
		f.clock.Advance(time.Second)
	}
	if want := f.clock.Now().Add(2 * time.Second); !f.m.recheck.Equal(want) {
		t.Errorf("recheck at %v, want when the lease passes LeaseConfirm, %v", f.m.recheck, want)
	}
	f.clock.Advance(2*time.Second + time.Millisecond)
	f.pass()
	if st := f.nodeState("node-a"); st != api.NodeDead {
		t.Fatalf("node-a is %s once its lease is older than LeaseConfirm, want dead", st)
	}
}

func TestPassMovesTrafficOnceTheRevisionIsReady(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	f.deploy("example.test/hello:v1", 1)

	// The first revision takes the traffic at once, and is recorded as
	// ready when its replica is.
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Fatalf("first deploy: traffic %s, want all on hello-00001", got)
	}
	f.pass()
	f.ready("hello-00001")
	f.pass()
	if got := f.latestReady(); got != "hello-00001" {
		t.Fatalf("latest ready revision %q, want hello-00001", got)
	}

	// A second deploy: the traffic stays on hello-00001 while hello-00002
	// has no Ready replica (an image that does not pull, say)...
	f.deploy("example.test/hello:v2", 1)
	for range 3 {
		f.pass()
	}
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Fatalf("traffic moved to a revision with no Ready replica: %s", got)
	}
	// ... and moves, all of it, once hello-00002 has one.
	f.ready("hello-00002")
	f.pass()
	if got, ready := f.traffic(), f.latestReady(); got != "[{hello-00002 100}]" || ready != "hello-00002" {
		t.Fatalf("traffic %s, latest ready %q; want all on hello-00002", got, ready)
	}

	// After the rollout, traffic someone sets by hand stays as set.
	f.setTraffic(api.TrafficTarget{Revision: "hello-00001", Percent: 100})
	for range 3 {
		f.pass()
	}
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Errorf("a pass overrode the traffic set by hand: %s", got)
	}

	// A split set by hand while a revision rolls out stays when it is
	// Ready: the user spoke after the deploy.
	f.deploy("example.test/hello:v3", 1)
	f.pass()
	f.setTraffic(api.TrafficTarget{Revision: "hello-00001", Percent: 90}, api.TrafficTarget{Revision: "hello-00003", Percent: 10})
	f.ready("hello-00003")
	f.pass()
	if got := f.latestReady(); got != "hello-00003" {
		t.Fatalf("latest ready revision %q, want hello-00003", got)
	}
	if got := f.traffic(); got != "[{hello-00001 90} {hello-00003 10}]" {
		t.Errorf("the rollout overrode a split set during it: %s", got)
	}

	// The next deploy moves the traffic again: the split predates it.
	f.deploy("example.test/hello:v4", 1)
	f.pass()
	f.ready("hello-00004")
	f.pass()
	if got := f.traffic(); got != "[{hello-00004 100}]" {
		t.Errorf("traffic %s, want all on hello-00004", got)
	}
}

func TestPassRemovesReplicasOfGoneRevisions(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	f.pass()
	// A replica whose revision has no Scale, as after a crash mid-delete.
	orphan := &api.Replica{
		Metadata: api.ObjectMeta{Name: "hello-00007-abcde", Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00007"},
	}
	if _, err := store.Create(f.ctx, f.store, orphan); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-a"}, f.placement()); diff != "" {
		t.Errorf("placement (-want +got):\n%s", diff)
	}
}

// TestRunLeadsReactsAndResyncsOnTheClock runs the whole loop: elected, it
// reacts to a write at once and, on the resync tick of its clock alone,
// notices a node that stopped beating.
func TestRunLeadsReactsAndResyncsOnTheClock(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Debounce = 0 // react to the write without advancing the clock
		c.Resync, c.NodeTimeout = time.Minute, 30*time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()

	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	f.waitFor("a replica bound to node-a", func() bool {
		reps := f.replicas()
		return len(reps) == 1 && reps[0].Spec.NodeName == "node-a"
	})
	// Nothing is written now; only time passes.
	f.clock.Advance(time.Minute)
	// The counter moves once the write is done: wait for both.
	f.waitFor("node-a dead and counted", func() bool {
		return f.nodeState("node-a") == api.NodeDead && testutil.ToFloat64(f.m.metrics.nodesDead) == 1
	})
	if lead, dead := testutil.ToFloat64(f.m.metrics.leader), testutil.ToFloat64(f.m.metrics.nodesDead); lead != 1 || dead != 1 {
		t.Errorf("while leading: leader %v, nodes declared dead %v; want 1 and 1", lead, dead)
	}
	stop()
	if lead := testutil.ToFloat64(f.m.metrics.leader); lead != 0 {
		t.Errorf("after Run: leader %v, want 0", lead)
	}
}

// waitFor checks cond after every change in etcd until it holds.
func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, testTimeout)
	defer cancel()
	// Watch from the revision read first, so that no change between the
	// check and the watch's start goes unseen.
	resp, err := f.store.Client().Get(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		f.t.Fatal(err)
	}
	wch := f.store.Client().Watch(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for !cond() {
		select {
		case <-wch:
		case <-ctx.Done():
			f.t.Fatalf("waited %s for %s", testTimeout, what)
		}
	}
}

func watchEvent(key string) clientv3.WatchResponse {
	return clientv3.WatchResponse{Events: []*clientv3.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key)}}}}
}

func TestWaitForChange(t *testing.T) {
	replica := store.Prefix + "replicas/default/hello/hello-00001-abcde"
	stats := store.StatsPrefix + "gw-1"
	leaderKey := store.Prefix + "leader/controllers/1"
	for _, tc := range []struct {
		name   string
		events []string // keys written, in order
		// debounce: the events are queued at once, and the wait sleeps on
		// the clock after the first relevant one, then drains the rest.
		// Otherwise each is handed over in turn and the wait must take
		// them all and still wait, for the tick or for gossip.
		debounce bool
		wake     bool
	}{
		{name: "a change, after the debounce", events: []string{replica}, debounce: true},
		{name: "a burst, as one", events: []string{replica, replica, stats, replica}, debounce: true},
		{name: "stats and leader keys wait for the tick", events: []string{stats, leaderKey, stats}},
		{name: "gossip wakes it", events: []string{stats}, wake: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake()
			wake := make(chan struct{})
			m := &Manager{cfg: Config{Debounce: time.Second}, clock: clk, wake: wake}
			var wch chan clientv3.WatchResponse
			if tc.debounce {
				wch = make(chan clientv3.WatchResponse, len(tc.events))
				for _, k := range tc.events {
					wch <- watchEvent(k)
				}
			} else {
				wch = make(chan clientv3.WatchResponse)
			}
			tick := make(chan time.Time)
			done := make(chan error, 1)
			go func() { done <- m.waitForChange(context.Background(), wch, nil, tick, nil) }()

			if tc.debounce {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				if err := clk.BlockUntilContext(ctx, 1); err != nil {
					t.Fatalf("no debounce: %v", err)
				}
				select {
				case err := <-done:
					t.Fatalf("returned %v before the debounce ended", err)
				default:
				}
				clk.Advance(time.Second)
			} else {
				for _, k := range tc.events {
					handOver(t, done, wch, watchEvent(k), "event "+k)
				}
				if tc.wake {
					handOver(t, done, wake, struct{}{}, "gossip's wake-up")
				} else {
					handOver(t, done, tick, clk.Now(), "the tick")
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("waitForChange: %v", err)
			}
			if len(wch) != 0 {
				t.Errorf("%d watch batches left behind, want the burst drained", len(wch))
			}
		})
	}
}

// handOver gives a waiting waitForChange one more input; it fails the
// test if the wait returned instead of taking it.
func handOver[T any](t *testing.T, done <-chan error, c chan<- T, v T, what string) {
	t.Helper()
	select {
	case c <- v:
	case err := <-done:
		t.Fatalf("returned (%v) before %s", err, what)
	case <-time.After(testTimeout):
		t.Fatalf("%s not taken within %s", what, testTimeout)
	}
}

func TestWaitForChangeEnds(t *testing.T) {
	m := &Manager{cfg: Config{Debounce: time.Hour}, clock: clock.NewFake()}
	closed := make(chan clientv3.WatchResponse)
	close(closed)
	if err := m.waitForChange(context.Background(), closed, nil, nil, nil); err != errWatchClosed {
		t.Errorf("closed watch: %v, want errWatchClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.waitForChange(ctx, make(chan clientv3.WatchResponse), nil, nil, nil); err != context.Canceled {
		t.Errorf("ended context: %v, want context.Canceled", err)
	}
	// A change arrives, and ctx ends during its debounce.
	ctx, cancel = context.WithCancel(context.Background())
	wch := make(chan clientv3.WatchResponse, 1)
	wch <- watchEvent(store.Prefix + "functions/default/hello")
	done := make(chan error, 1)
	go func() { done <- m.waitForChange(ctx, wch, nil, nil, nil) }()
	if err := m.clock.(*clock.Fake).BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("ended during the debounce: %v, want context.Canceled", err)
	}
}
