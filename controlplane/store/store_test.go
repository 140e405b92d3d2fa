package store_test

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// newStore returns a store on a fresh etcd, stamping times from a fake
// clock.
func newStore(t *testing.T) (*store.Store, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake()
	return store.New(etcdtest.Start(t), clk), clk
}

func replica(name string) *api.Replica {
	return &api.Replica{
		Metadata: api.ObjectMeta{Name: name, Labels: map[string]string{api.LabelFunction: "hello"}},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001"},
	}
}

func TestCreateGetList(t *testing.T) {
	st, clk := newStore(t)
	ctx := context.Background()
	clk.Advance(1500 * time.Millisecond)

	created, err := store.Create(ctx, st, replica("hello-00001-abcde"))
	if err != nil {
		t.Fatal(err)
	}
	m := created.Metadata
	if m.Namespace != api.DefaultNamespace || m.UID == "" || m.Generation != 1 || m.ResourceVersion == "" || created.Kind != api.KindReplica {
		t.Errorf("created %+v (kind %q): want the default namespace, a uid, generation 1, a version and the kind", m, created.Kind)
	}
	if want := clock.Epoch.Add(time.Second); !m.CreationTimestamp.Equal(want) {
		t.Errorf("created at %v, want the clock's now to the second, %v", m.CreationTimestamp, want)
	}

	got, err := store.Get[api.Replica](ctx, st, api.Key{Namespace: "default", Name: "hello-00001-abcde"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created, got); diff != "" {
		t.Errorf("Get differs from what Create returned (-created +got):\n%s", diff)
	}

	if _, err := store.Create(ctx, st, replica("hello-00001-abcde")); !errors.Is(err, api.ErrAlreadyExist) {
		t.Errorf("create it again: %v, want already exists", err)
	}
	other := replica("hello-00001-fghij")
	other.Metadata.Namespace = "team"
	if _, err := store.Create(ctx, st, other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		scope store.Scope
		want  []string
	}{
		{"every namespace", store.Scope{}, []string{"default/hello-00001-abcde", "team/hello-00001-fghij"}},
		{"one namespace", store.Scope{Namespace: "team"}, []string{"team/hello-00001-fghij"}},
		{"one function", store.Scope{Namespace: "default", Function: "hello"}, []string{"default/hello-00001-abcde"}},
		{"another function", store.Scope{Namespace: "default", Function: "hello-world"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items, rev, err := store.List[api.Replica](ctx, st, tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range items {
				names = append(names, api.KeyOf(&r).String())
			}
			if diff := cmp.Diff(tc.want, names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if rv, _ := strconv.ParseInt(created.Metadata.ResourceVersion, 10, 64); rev < rv {
				t.Errorf("list read at %d, before the create at %d", rev, rv)
			}
		})
	}
}

// getter is store.Get of type T, for tables of several types.
func getter[T any, P api.ObjectPtr[T]](ctx context.Context, st *store.Store) func(api.Key) error {
	return func(k api.Key) error {
		_, err := store.Get[T, P](ctx, st, k)
		return err
	}
}

func TestGetMissing(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		get  func(api.Key) error
		obj  string
	}{
		{"absent", getter[api.Function](ctx, st), "nope"},
		{"a revision name without its number", getter[api.Revision](ctx, st), "hello"},
		{"a replica name without its suffix", getter[api.Replica](ctx, st), "hello-00001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.get(api.Key{Namespace: "default", Name: tc.obj})
			if !errors.Is(err, api.ErrNotFound) {
				t.Errorf("Get = %v, want not found", err)
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	st, clk := newStore(t)
	ctx := context.Background()
	created, err := store.Create(ctx, st, replica("hello-00001-abcde"))
	if err != nil {
		t.Fatal(err)
	}
	stale := created.Metadata.ResourceVersion
	clk.Advance(time.Hour)

	next := *created
	next.Spec.NodeName = "node-a"
	next.Metadata.UID, next.Metadata.CreationTimestamp = "forged", time.Time{}
	updated, err := store.Update(ctx, st, &next)
	if err != nil {
		t.Fatalf("update with the current version: %v", err)
	}
	if updated.Metadata.UID != created.Metadata.UID || !updated.Metadata.CreationTimestamp.Equal(created.Metadata.CreationTimestamp) {
		t.Errorf("update changed server-owned metadata: %+v → %+v", created.Metadata, updated.Metadata)
	}
	if updated.Metadata.ResourceVersion == stale {
		t.Error("update kept the old resourceVersion")
	}

	again := *created
	again.Spec.NodeName = "node-b"
	if _, err := store.Update(ctx, st, &again); !errors.Is(err, api.ErrConflict) {
		t.Errorf("update with a stale version: %v, want conflict", err)
	}
	got, err := store.Get[api.Replica](ctx, st, api.Key{Namespace: "default", Name: "hello-00001-abcde"})
	if err != nil || got.Spec.NodeName != "node-a" {
		t.Fatalf("after a stale update: %+v, %v; want node-a kept", got, err)
	}

	again.Metadata.ResourceVersion = "" // no version: last writer wins
	if _, err := store.Update(ctx, st, &again); err != nil {
		t.Errorf("unconditional update: %v", err)
	}
	missing := replica("hello-00001-zzzzz")
	if _, err := store.Update(ctx, st, missing); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("update of a missing replica: %v, want not found", err)
	}
	bad := *created
	bad.Metadata.ResourceVersion = "yesterday"
	if _, err := store.Update(ctx, st, &bad); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("update with a malformed version: %v, want a bad request", err)
	}
}

func TestDelete(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	created, err := store.Create(ctx, st, replica("hello-00001-abcde"))
	if err != nil {
		t.Fatal(err)
	}
	updated, err := store.UpdateReplicaStatus(ctx, st, &api.Replica{Metadata: created.Metadata, Status: api.ReplicaStatus{Phase: api.ReplicaReady}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Delete[api.Replica](ctx, st, api.Key{Namespace: "default", Name: "hello-00001-abcde"}, created.Metadata.ResourceVersion); !errors.Is(err, api.ErrConflict) {
		t.Errorf("delete at a stale version: %v, want conflict", err)
	}
	if err := store.Delete[api.Replica](ctx, st, api.Key{Namespace: "default", Name: "hello-00001-abcde"}, updated.Metadata.ResourceVersion); err != nil {
		t.Errorf("delete at the current version: %v", err)
	}
	if err := store.Delete[api.Replica](ctx, st, api.Key{Namespace: "default", Name: "hello-00001-abcde"}, ""); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("delete again: %v, want not found", err)
	}
}

func TestStatusAndSpecWritesKeepTheOtherHalf(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	r := replica("hello-00001-abcde")
	r.Spec.NodeName = "node-a"
	created, err := store.Create(ctx, st, r)
	if err != nil {
		t.Fatal(err)
	}
	// An agent reports status, and would move the replica if it could.
	report := &api.Replica{
		Metadata: api.ObjectMeta{Name: created.Metadata.Name, Namespace: "default"},
		Spec:     api.ReplicaSpec{NodeName: "node-b"},
		Status:   api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2"},
	}
	out, err := store.UpdateReplicaStatus(ctx, st, report)
	if err != nil {
		t.Fatal(err)
	}
	if out.Spec != created.Spec || out.Metadata.Labels[api.LabelFunction] != "hello" || out.Status.Phase != api.ReplicaReady {
		t.Errorf("status write: spec %+v labels %v status %+v; want the spec and labels kept, the status written",
			out.Spec, out.Metadata.Labels, out.Status)
	}

	f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	api.SetDefaults(&f.Spec)
	if _, err := st.PutFunction(ctx, f, store.CreateOnly); err != nil {
		t.Fatal(err)
	}
	sc, err := store.Get[api.Scale](ctx, st, api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	sc.Status = api.ScaleStatus{Replicas: 1, ReadyReplicas: 1}
	if sc, err = store.UpdateScaleStatus(ctx, st, sc); err != nil {
		t.Fatal(err)
	}
	sc.Spec.Replicas, sc.Status = 3, api.ScaleStatus{}
	if sc, err = store.UpdateScaleSpec(ctx, st, sc); err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 3 || sc.Status != (api.ScaleStatus{Replicas: 1, ReadyReplicas: 1}) {
		t.Errorf("spec write: %+v %+v; want 3 replicas wanted and the status kept", sc.Spec, sc.Status)
	}
}

func TestSetScaleReplicas(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	api.SetDefaults(&f.Spec)
	if _, err := st.PutFunction(ctx, f, store.CreateOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetScaleReplicas(ctx, st, api.Key{Namespace: "default", Name: "hello-00001"}, 0, 5); !errors.Is(err, api.ErrConflict) {
		t.Errorf("from a count it does not have: %v, want conflict", err)
	}
	out, err := store.SetScaleReplicas(ctx, st, api.Key{Namespace: "default", Name: "hello-00001"}, 1, 5)
	if err != nil || out.Spec.Replicas != 5 {
		t.Errorf("from its count: %+v, %v; want 5", out, err)
	}
	if _, err := store.SetScaleReplicas(ctx, st, api.Key{Namespace: "default", Name: "nope-00001"}, 0, 1); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("a missing scale: %v, want not found", err)
	}
}

// count is how many objects of type T the store holds.
func count[T any, P api.ObjectPtr[T]](t *testing.T, st *store.Store) int {
	t.Helper()
	items, _, err := store.List[T, P](context.Background(), st, store.Scope{})
	if err != nil {
		t.Fatal(err)
	}
	return len(items)
}

func deploy(t *testing.T, st *store.Store, image string, mode store.WriteMode) (*store.FunctionResult, error) {
	t.Helper()
	f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: image}}
	api.SetDefaults(&f.Spec)
	return st.PutFunction(context.Background(), f, mode)
}

func TestPutFunctionModes(t *testing.T) {
	st, _ := newStore(t)
	if _, err := deploy(t, st, "example.test/hello:v1", store.ReplaceOnly); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("replace a missing function: %v, want not found", err)
	}
	res, err := deploy(t, st, "example.test/hello:v1", store.CreateOnly)
	if err != nil || !res.Created || res.Revision != "hello-00001" {
		t.Fatalf("create: %+v, %v; want created with hello-00001", res, err)
	}
	if _, err := deploy(t, st, "example.test/hello:v1", store.CreateOnly); !errors.Is(err, api.ErrAlreadyExist) {
		t.Errorf("create again: %v, want already exists", err)
	}
	res, err = deploy(t, st, "example.test/hello:v1", store.CreateOrReplace)
	if err != nil || res.Created || res.Revision != "" {
		t.Errorf("the same spec again: %+v, %v; want no revision", res, err)
	}
	res, err = deploy(t, st, "example.test/hello:v2", store.ReplaceOnly)
	if err != nil || res.Revision != "hello-00002" || res.Function.Status.LatestRevision != "hello-00002" {
		t.Errorf("a new spec: %+v, %v; want hello-00002", res, err)
	}
	// Deleting takes the revisions, scales and traffic along.
	ctx := context.Background()
	if err := st.DeleteFunction(ctx, api.Key{Namespace: "default", Name: "hello"}, ""); err != nil {
		t.Fatal(err)
	}
	for kind, n := range map[string]int{
		"revisions": count[api.Revision](t, st),
		"scales":    count[api.Scale](t, st),
		"traffic":   count[api.Traffic](t, st),
	} {
		if n != 0 {
			t.Errorf("%s after the delete: %d left", kind, n)
		}
	}
}

func TestPromoteRevisionOnlyTheLatestOnce(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for _, img := range []string{"example.test/hello:v1", "example.test/hello:v2"} {
		if _, err := deploy(t, st, img, store.CreateOrReplace); err != nil {
			t.Fatal(err)
		}
	}
	if moved, err := st.PromoteRevision(ctx, api.Key{Namespace: "default", Name: "hello"}, "hello-00001"); err != nil || moved {
		t.Errorf("promote a revision that is not the latest: moved %v, %v; want neither", moved, err)
	}
	if moved, err := st.PromoteRevision(ctx, api.Key{Namespace: "default", Name: "hello"}, "hello-00002"); err != nil || !moved {
		t.Errorf("promote the latest: moved %v, %v; want moved", moved, err)
	}
	if moved, err := st.PromoteRevision(ctx, api.Key{Namespace: "default", Name: "hello"}, "hello-00002"); err != nil || moved {
		t.Errorf("promote it again: moved %v, %v; want nothing done", moved, err)
	}
	if _, err := st.PromoteRevision(ctx, api.Key{Namespace: "default", Name: "nope"}, "nope-00001"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("promote in a missing function: %v, want not found", err)
	}
	got, err := store.Get[api.Function](ctx, st, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.LatestReadyRevision != "hello-00002" || got.Status.LatestRevision != "hello-00002" {
		t.Errorf("status after the promotion: %+v", got.Status)
	}
	tr, err := store.Get[api.Traffic](ctx, st, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.TrafficTarget{{Revision: "hello-00002", Percent: 100}}, tr.Spec.Targets); diff != "" {
		t.Errorf("traffic (-want +got):\n%s", diff)
	}
	// A deploy keeps what the rollout recorded.
	res, err := deploy(t, st, "example.test/hello:v3", store.CreateOrReplace)
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Function.Status; s.LatestReadyRevision != "hello-00002" || s.LatestRevision != "hello-00003" {
		t.Errorf("status after the next deploy: %+v", s)
	}
}

func TestCreateNodeGivesEachASubnet(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	cidr := netip.MustParsePrefix("10.244.0.0/23") // room for two /24s
	node := func(name string) *api.Node { return &api.Node{Metadata: api.ObjectMeta{Name: name}} }
	a, err := st.CreateNode(ctx, node("a"), cidr, 24)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateNode(ctx, node("b"), cidr, 24)
	if err != nil {
		t.Fatal(err)
	}
	if a.Spec.PodSubnet != "10.244.0.0/24" || b.Spec.PodSubnet != "10.244.1.0/24" {
		t.Errorf("subnets %q and %q, want the two /24s in order", a.Spec.PodSubnet, b.Spec.PodSubnet)
	}
	if _, err := st.CreateNode(ctx, node("a"), cidr, 24); !errors.Is(err, api.ErrAlreadyExist) {
		t.Errorf("register a again: %v, want already exists", err)
	}
	if _, err := st.CreateNode(ctx, node("c"), cidr, 24); !errors.Is(err, store.ErrNoSubnet) {
		t.Errorf("a third node: %v, want ErrNoSubnet", err)
	}
	// Deleting a node frees its subnet for the next.
	if err := st.DeleteNode(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	c, err := st.CreateNode(ctx, node("c"), cidr, 24)
	if err != nil || c.Spec.PodSubnet != "10.244.0.0/24" {
		t.Errorf("after a left: %+v, %v; want c on a's subnet", c, err)
	}
}

func TestWatch(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	created, err := store.Create(ctx, st, replica("hello-00001-abcde"))
	if err != nil {
		t.Fatal(err)
	}
	from, _ := strconv.ParseInt(created.Metadata.ResourceVersion, 10, 64)

	// From before the create: the watch replays it, then follows.
	w, err := store.Watch[api.Replica](ctx, st, store.Scope{}, from-1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := *created
	next.Spec.NodeName = "node-a"
	if _, err := store.Update(ctx, st, &next); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete[api.Replica](ctx, st, api.KeyOf(created), ""); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		events, _, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			got = append(got, e.Type+" "+e.Object.Metadata.Name+" "+e.Object.Spec.NodeName+" "+e.Object.Kind)
		}
	}
	want := []string{
		"ADDED hello-00001-abcde  Replica",
		"MODIFIED hello-00001-abcde node-a Replica",
		"DELETED hello-00001-abcde node-a Replica",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// Once etcd compacts past a version, a watch from it is Gone.
	resp, err := st.Client().Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	gone, err := store.Watch[api.Replica](ctx, st, store.Scope{}, from)
	if err == nil {
		// etcd confirmed the watch before it checked the version: the
		// first Next says what it found.
		defer gone.Stop()
		var events []api.WatchEvent[*api.Replica]
		events, _, err = gone.Next()
		if len(events) != 0 {
			t.Errorf("a watch from a compacted version sent %d events", len(events))
		}
	}
	var ae *api.Error
	if !errors.Is(err, api.ErrGone) || !errors.As(err, &ae) || ae.Message == "" {
		t.Errorf("watch from a compacted version: %v, want 410 Gone with a message", err)
	}
}

// TestEtcdKeys pins the layout of keys in etcd: existing data is read
// from these keys, so a change here needs a migration.
func TestEtcdKeys(t *testing.T) {
	for _, tc := range []struct {
		kind     api.Kind
		ns, name string
		want     string
		ok       bool
	}{
		{api.FunctionKind, "default", "hello", "/surge/v1/functions/default/hello", true},
		{api.RevisionKind, "default", "hello-00002", "/surge/v1/revisions/default/hello/hello-00002", true},
		{api.TrafficKind, "default", "hello", "/surge/v1/traffic/default/hello", true},
		{api.ScaleKind, "team", "hello-world-00001", "/surge/v1/scales/team/hello-world/hello-world-00001", true},
		{api.ReplicaKind, "default", "hello-00001-x7k2p", "/surge/v1/replicas/default/hello/hello-00001-x7k2p", true},
		{api.NodeKind, "", "node-a", "/surge/v1/nodes/node-a", true},
		{api.NodeKind, "default", "node-a", "/surge/v1/nodes/node-a", true},
		{api.RevisionKind, "default", "hello", "", false},
		{api.ReplicaKind, "default", "hello-00001", "", false},
	} {
		key := api.Key{Namespace: tc.ns, Name: tc.name}
		got, ok := store.EtcdKey(tc.kind, key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("EtcdKey(%s, %s) = %q, %v; want %q, %v", tc.kind.Plural, key, got, ok, tc.want, tc.ok)
		}
	}
	for _, k := range []api.Kind{api.FunctionKind, api.RevisionKind, api.TrafficKind, api.ScaleKind, api.ReplicaKind, api.NodeKind} {
		want := k == api.RevisionKind || k == api.ScaleKind || k == api.ReplicaKind
		if got := store.GroupedByFunction(k); got != want {
			t.Errorf("GroupedByFunction(%s) = %v, want %v", k.Plural, got, want)
		}
	}
}

// TestReadsWhatWasStoredBefore reads objects written, at their keys, the
// way earlier versions wrote them: durations as strings, some empty.
func TestReadsWhatWasStoredBefore(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	const fn = `{"kind":"Function","metadata":{"name":"hello","namespace":"default","uid":"u1","generation":1},` +
		`"spec":{"image":"example.test/hello:v1","port":8080,"resources":{"cpu":"100m","memory":"128Mi"},` +
		`"timeout":"5m","readiness":{"path":"/ready","period":""},` +
		`"scaling":{"metric":"concurrency","scaleToZeroGrace":"90s","stableWindow":""}},` +
		`"status":{"latestRevision":"hello-00001"}}`
	const rev = `{"kind":"Revision","metadata":{"name":"hello-00001","namespace":"default"},` +
		`"spec":{"function":"hello","number":1,"template":{"image":"example.test/hello:v1","timeout":"300s"}}}`
	for key, val := range map[string]string{
		"/surge/v1/functions/default/hello":             fn,
		"/surge/v1/revisions/default/hello/hello-00001": rev,
	} {
		if _, err := st.Client().Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	f, err := store.Get[api.Function](ctx, st, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	wantSpec := api.FunctionSpec{
		Image: "example.test/hello:v1", Port: 8080, Resources: api.Resources{CPU: "100m", Memory: "128Mi"},
		Timeout:   api.Duration{Duration: 5 * time.Minute},
		Readiness: &api.Probe{Path: "/ready"},
		Scaling:   api.ScalingPolicy{Metric: api.MetricConcurrency, ScaleToZeroGrace: api.Duration{Duration: 90 * time.Second}},
	}
	if diff := cmp.Diff(wantSpec, f.Spec); diff != "" {
		t.Errorf("function spec (-want +got):\n%s", diff)
	}
	revs, _, err := store.List[api.Revision](ctx, st, store.Scope{Namespace: "default", Function: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 1 || revs[0].Spec.Template.Timeout.Duration != 5*time.Minute {
		t.Errorf("revisions %+v, want hello-00001 with a 5m timeout", revs)
	}
}

// TestPutFunctionPinsDigest: the digest a deploy resolved is the
// revision's; the same spec with the tag moved makes a new revision, and
// with no digest known (unresolvable) or the same one makes none.
func TestPutFunctionPinsDigest(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	put := func(digest string) *store.FunctionResult {
		t.Helper()
		f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
		api.SetDefaults(&f.Spec)
		res, err := st.PutFunction(ctx, f, store.CreateOrReplace, store.WithImageDigest(digest))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	const d1, d2 = "sha256:1111111111111111111111111111111111111111111111111111111111111111", "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	steps := []struct {
		digest, wantRev, wantPinned string
	}{
		{d1, "hello-00001", d1},
		{d1, "", d1}, // same tag, same digest: unchanged
		{"", "", d1}, // not resolvable now: unchanged, still pinned
		{d2, "hello-00002", d2},
	}
	for i, s := range steps {
		res := put(s.digest)
		if res.Revision != s.wantRev || res.Function.Status.ImageDigest != s.wantPinned {
			t.Errorf("step %d (digest %q): revision %q, function pinned to %q; want %q and %q",
				i, s.digest, res.Revision, res.Function.Status.ImageDigest, s.wantRev, s.wantPinned)
		}
	}
	for rev, want := range map[string]string{"hello-00001": d1, "hello-00002": d2} {
		r, err := store.Get[api.Revision](ctx, st, api.Key{Namespace: "default", Name: rev})
		if err != nil {
			t.Fatal(err)
		}
		if r.Spec.ImageDigest != want || r.Spec.Image() != "example.test/hello:v1@"+want {
			t.Errorf("%s pins %q and runs %q; want %q", rev, r.Spec.ImageDigest, r.Spec.Image(), want)
		}
	}
}

// TestPutFunctionHTTPSRedirectMakesNoRevision: httpsRedirect is how
// clients reach a function, not what its replicas run: turning it on or
// off rewrites the function and makes no revision.
func TestPutFunctionHTTPSRedirectMakesNoRevision(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	put := func(redirect bool) *store.FunctionResult {
		t.Helper()
		f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1", HTTPSRedirect: redirect}}
		api.SetDefaults(&f.Spec)
		res, err := st.PutFunction(ctx, f, store.CreateOrReplace)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	put(false)
	for _, redirect := range []bool{true, true, false} {
		res := put(redirect)
		if res.Revision != "" || res.Function.Spec.HTTPSRedirect != redirect {
			t.Errorf("httpsRedirect %v: revision %q, stored %v; want no revision and the field stored", redirect, res.Revision, res.Function.Spec.HTTPSRedirect)
		}
		got, err := store.Get[api.Function](ctx, st, api.Key{Namespace: "default", Name: "hello"})
		if err != nil || got.Spec.HTTPSRedirect != redirect || got.Status.LatestRevision != "hello-00001" {
			t.Errorf("read back: %+v, %v; want httpsRedirect %v on hello-00001", got, err, redirect)
		}
	}
	if n := count[api.Revision](t, st); n != 1 {
		t.Errorf("%d revisions, want 1", n)
	}
}
