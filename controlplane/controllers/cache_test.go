package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

// TestCacheFollowsTheWatch: a cache read once follows every later write
// (its own and others'), and sync returns only once it reflects them all.
func TestCacheFollowsTheWatch(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	c, err := readCache(ctx, f.store, f.clock, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.functions) != 1 || len(c.scales) != 1 || len(c.revisions) != 1 || len(c.nodes) != 1 {
		t.Fatalf("read: %d functions, %d scales, %d revisions, %d nodes; want 1 of each",
			len(c.functions), len(c.scales), len(c.revisions), len(c.nodes))
	}

	// Others write: a node, a replica, a lease.
	f.node("node-b", f.clock.Now())
	r, err := store.Create(f.ctx, f.store, &api.Replica{
		Metadata: api.ObjectMeta{Name: "hello-00001-abcde", Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "node-b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RenewNodeLease(f.ctx, "node-b"); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c.replicas[api.KeyOf(r)] == nil || c.nodes["node-b"] == nil || c.leases["node-b"].IsZero() {
		t.Fatalf("after sync: replica %v, node-b %v, lease %v; want all three",
			c.replicas[api.KeyOf(r)] != nil, c.nodes["node-b"] != nil, c.leases["node-b"])
	}
	used := func() map[string]int64 {
		out := map[string]int64{}
		for _, n := range c.cluster.Nodes() {
			out[n.Name] = n.UsedMilliCPU
		}
		return out
	}
	if diff := cmp.Diff(map[string]int64{"node-a": 0, "node-b": 100}, used()); diff != "" {
		t.Errorf("accounting (-want +got):\n%s", diff)
	}

	// A write outside the watched kinds moves etcd's revision with no
	// event the cache needs: sync still returns (a progress notification).
	if _, err := f.store.Client().Put(f.ctx, "/elsewhere/key", "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(ctx); err != nil {
		t.Fatal(err)
	}

	// Deletes.
	if err := store.Delete[api.Replica](f.ctx, f.store, api.KeyOf(r), ""); err != nil {
		t.Fatal(err)
	}
	if err := f.store.DeleteNode(f.ctx, "node-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.store.DeleteFunction(f.ctx, api.Key{Namespace: "default", Name: "hello"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(c.replicas) != 0 || len(c.byRevision) != 0 || len(c.unbound) != 0 || len(c.functions) != 0 ||
		len(c.scales) != 0 || len(c.revisions) != 0 || c.nodes["node-a"] != nil {
		t.Errorf("after the deletes: %d replicas (%d by revision, %d unbound), %d functions, %d scales, %d revisions, node-a %v; want none",
			len(c.replicas), len(c.byRevision), len(c.unbound), len(c.functions), len(c.scales), len(c.revisions), c.nodes["node-a"] != nil)
	}
	if diff := cmp.Diff(map[string]int64{"node-b": 0}, used()); diff != "" {
		t.Errorf("accounting after the deletes (-want +got):\n%s", diff)
	}
}

// TestCacheIgnoresWhatItHasNewer: a pass applies its own writes at once;
// the watch then reports older changes of the same objects, which must not
// undo them.
func TestCacheIgnoresWhatItHasNewer(t *testing.T) {
	c := newEmptyCache()
	r := &api.Replica{Metadata: api.ObjectMeta{Name: "hello-00001-abcde", Namespace: "default", ResourceVersion: "10"},
		Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "node-a"}}
	c.setReplica(r)
	old := *r
	old.Metadata.ResourceVersion, old.Spec.NodeName = "8", ""
	c.setReplica(&old)
	if got := c.replicas[api.KeyOf(r)]; got.Spec.NodeName != "node-a" || len(c.unbound) != 0 {
		t.Errorf("an older version replaced a newer one: %+v", got)
	}
	c.remove(store.KindPrefix(api.ReplicaKind)+"default/hello/hello-00001-abcde", 9)
	if c.replicas[api.KeyOf(r)] == nil {
		t.Error("the delete of an older object of the same name removed the newer one")
	}
	c.remove(store.KindPrefix(api.ReplicaKind)+"default/hello/hello-00001-abcde", 11)
	if c.replicas[api.KeyOf(r)] != nil {
		t.Error("a newer delete was ignored")
	}
}

// TestScheduleRetriesABindingThatLostARace: the node changes after the
// cache read it; the binding's transaction fails, and the pass reads both
// again and binds.
func TestScheduleRetriesABindingThatLostARace(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	if err := f.m.Pass(f.ctx); err != nil {
		t.Fatal(err)
	}
	// Unbind it, so that the next pass binds it again.
	reps := f.replicas()
	r := reps[0]
	r.Spec.NodeName = ""
	if _, err := store.Update(f.ctx, f.store, &r); err != nil {
		t.Fatal(err)
	}
	c, err := readCache(f.ctx, f.store, f.clock, false)
	if err != nil {
		t.Fatal(err)
	}
	// The node's agent rewrites its status behind the cache's back.
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.AgentURL = "https://10.0.0.1:7073"
	if _, err := store.UpdateNodeStatus(f.ctx, f.store, n); err != nil {
		t.Fatal(err)
	}
	if err := f.m.schedule(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-a"}, f.placement()); diff != "" {
		t.Errorf("placement (-want +got):\n%s", diff)
	}
	if got := c.nodes["node-a"].Status.AgentURL; got != n.Status.AgentURL {
		t.Errorf("the cache kept the node it raced on: agent URL %q", got)
	}
}

func TestBindReplica(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	f.deploy("example.test/hello:v1", 1)
	r, err := store.Create(f.ctx, f.store, &api.Replica{
		Metadata: api.ObjectMeta{Name: "hello-00001-abcde", Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001"},
		Status:   api.ReplicaStatus{Phase: api.ReplicaPending, Message: "no node fits: no nodes have joined"},
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	stale := *r
	stale.Metadata.ResourceVersion = "1"
	if _, err := store.BindReplica(f.ctx, f.store, &stale, "node-a", n.Metadata.ResourceVersion); !isConflict(err) {
		t.Errorf("stale replica: %v, want a conflict", err)
	}
	if _, err := store.BindReplica(f.ctx, f.store, r, "node-a", "1"); !isConflict(err) {
		t.Errorf("stale node: %v, want a conflict", err)
	}
	if _, err := store.BindReplica(f.ctx, f.store, r, "node-z", n.Metadata.ResourceVersion); !isConflict(err) {
		t.Errorf("unknown node: %v, want a conflict", err)
	}
	out, err := store.BindReplica(f.ctx, f.store, r, "node-a", n.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Get[api.Replica](f.ctx, f.store, api.KeyOf(r))
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.NodeName != "node-a" || got.Status.Message != "" || got.Metadata.ResourceVersion != out.Metadata.ResourceVersion {
		t.Errorf("bound: %+v, returned version %s", got, out.Metadata.ResourceVersion)
	}
	// The same binding again: the replica changed (it is bound).
	if _, err := store.BindReplica(f.ctx, f.store, r, "node-a", n.Metadata.ResourceVersion); !isConflict(err) {
		t.Errorf("bound twice: %v, want a conflict", err)
	}
	if err := store.Delete[api.Replica](f.ctx, f.store, api.KeyOf(r), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := store.BindReplica(f.ctx, f.store, out, "node-a", n.Metadata.ResourceVersion); !isNotFound(err) {
		t.Errorf("deleted: %v, want not found", err)
	}
}

// TestPassDrainsANode: a drained node's replicas are replaced elsewhere
// and go only once their replacements are Ready.
func TestPassDrainsANode(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	f.node("node-b", f.clock.Now().Add(time.Hour))
	f.node("node-c", f.clock.Now().Add(time.Hour))
	f.deploy("example.test/hello:v1", 2)
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-a", "hello-00001@node-b"}, f.placement()); diff != "" {
		t.Fatalf("placement (-want +got):\n%s", diff)
	}
	f.readyAll()
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Unschedulable, n.Spec.Drain = true, true
	if _, err := store.Update(f.ctx, f.store, n); err != nil {
		t.Fatal(err)
	}
	f.pass()
	f.pass()
	want := []string{"hello-00001@node-a", "hello-00001@node-b", "hello-00001@node-c"}
	if diff := cmp.Diff(want, f.placement()); diff != "" {
		t.Fatalf("a replacement, away from the other replica (-want +got):\n%s", diff)
	}
	if got := f.scaleStatus("hello-00001"); got.ReadyReplicas != 2 {
		t.Errorf("while the replacement starts: %d Ready, want the 2 old ones", got.ReadyReplicas)
	}
	f.readyAll()
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-b", "hello-00001@node-c"}, f.placement()); diff != "" {
		t.Errorf("once the replacement is Ready (-want +got):\n%s", diff)
	}
}

// TestPassHonoursTheNodeSelector: a function's replicas go only to the
// nodes with its labels, and wait, saying why, when none has them.
func TestPassHonoursTheNodeSelector(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1",
		NodeSelector: map[string]string{"disk": "ssd"}}}
	fn.Spec.Scaling.MinScale = 2
	api.SetDefaults(&fn.Spec)
	if _, err := f.store.PutFunction(f.ctx, fn, store.CreateOrReplace); err != nil {
		t.Fatal(err)
	}
	f.pass()
	reps := f.replicas()
	if len(reps) != 2 || reps[0].Spec.NodeName != "" || reps[0].Status.Message != "no node fits: 1 nodes: 1 not matching the node selector" {
		t.Fatalf("with no ssd node: %+v", reps)
	}
	f.node("node-b", f.clock.Now().Add(time.Hour))
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	n.Metadata.Labels = map[string]string{"disk": "ssd"}
	if _, err := store.Update(f.ctx, f.store, n); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if diff := cmp.Diff([]string{"hello-00001@node-b", "hello-00001@node-b"}, f.placement()); diff != "" {
		t.Errorf("placement (-want +got):\n%s", diff)
	}
}

// readyAll reports every bound replica Ready, as their agents would.
func (f *fixture) readyAll() {
	f.t.Helper()
	for _, r := range f.replicas() {
		if r.Spec.NodeName == "" || r.Status.Phase == api.ReplicaReady {
			continue
		}
		r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2", Port: 8080}
		r.Metadata.ResourceVersion = ""
		if _, err := store.UpdateReplicaStatus(f.ctx, f.store, &r); err != nil {
			f.t.Fatal(err)
		}
	}
}

func isConflict(err error) bool { return err != nil && errors.Is(err, api.ErrConflict) }
func isNotFound(err error) bool { return err != nil && errors.Is(err, api.ErrNotFound) }

// TestReplicaSetsPlaceNewReplicasAsTheyMakeThem: a new replica is made
// bound, in one write; when its node changed after the cache read it, it
// is made unbound, and the scheduler binds it in the same pass.
func TestReplicaSetsPlaceNewReplicasAsTheyMakeThem(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	f.deploy("example.test/hello:v1", 1)
	c, err := readCache(f.ctx, f.store, f.clock, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.replicaSets(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-a"}, f.placement()); diff != "" {
		t.Fatalf("made bound (-want +got):\n%s", diff)
	}

	// Scale to two, with node-a rewritten behind the cache's back.
	if _, err := store.SetScaleReplicas(f.ctx, f.store, api.Key{Namespace: "default", Name: "hello-00001"}, 1, 2); err != nil {
		t.Fatal(err)
	}
	if c, err = readCache(f.ctx, f.store, f.clock, false); err != nil {
		t.Fatal(err)
	}
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.AgentURL = "https://10.0.0.1:7073"
	if _, err := store.UpdateNodeStatus(f.ctx, f.store, n); err != nil {
		t.Fatal(err)
	}
	if err := f.m.replicaSets(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"hello-00001@", "hello-00001@node-a"}, f.placement()); diff != "" {
		t.Fatalf("made unbound when its node changed (-want +got):\n%s", diff)
	}
	if got := c.cluster.Nodes()[0].UsedMilliCPU; got != 100 {
		t.Errorf("node-a reserves %dm after the failed placement, want 100m (the first replica's)", got)
	}
	if err := f.m.schedule(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"hello-00001@node-a", "hello-00001@node-a"}, f.placement()); diff != "" {
		t.Errorf("then bound (-want +got):\n%s", diff)
	}
}

func TestCreateBoundReplica(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now())
	n, err := store.Get[api.Node](f.ctx, f.store, api.Key{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	newReplica := func() *api.Replica {
		return &api.Replica{Metadata: api.ObjectMeta{Name: "hello-00001-abcde", Namespace: "default"},
			Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001"}}
	}
	if _, err := store.CreateBoundReplica(f.ctx, f.store, newReplica(), "node-a", "1"); !isConflict(err) {
		t.Errorf("stale node: %v, want a conflict", err)
	}
	out, err := store.CreateBoundReplica(f.ctx, f.store, newReplica(), "node-a", n.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Get[api.Replica](f.ctx, f.store, api.KeyOf(out))
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.NodeName != "node-a" || got.Metadata.UID == "" || got.Metadata.ResourceVersion != out.Metadata.ResourceVersion {
		t.Errorf("created: %+v", got)
	}
	if _, err := store.CreateBoundReplica(f.ctx, f.store, newReplica(), "node-a", n.Metadata.ResourceVersion); !errors.Is(err, api.ErrAlreadyExist) {
		t.Errorf("again: %v, want already exists", err)
	}
}
