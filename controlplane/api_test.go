package controlplane_test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

func hello(image string, env ...api.EnvVar) *api.Function {
	return &api.Function{
		Metadata: api.ObjectMeta{Name: "hello"},
		Spec:     api.FunctionSpec{Image: image, Env: env},
	}
}

func revisionNames(t *testing.T, c *client.Client, fn string) []string {
	t.Helper()
	list, err := client.List[api.Revision](context.Background(), c, "default", url.Values{"function": {fn}})
	if err != nil {
		t.Fatalf("list revisions: %v", err)
	}
	var names []string
	for _, r := range list.Items {
		names = append(names, r.Metadata.Name)
	}
	return names
}

func TestDeployMakesRevisionsIdempotently(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()

	f, err := c.PutFunction(ctx, hello("example.test/hello:v1"))
	if err != nil {
		t.Fatalf("first deploy: %v", err)
	}
	if f.Status.LatestRevision != "hello-00001" || f.Metadata.Generation != 1 {
		t.Fatalf("first deploy: revision %q generation %d, want hello-00001 and 1", f.Status.LatestRevision, f.Metadata.Generation)
	}
	if f.Spec.Port != api.DefaultPort {
		t.Errorf("port was not defaulted: %d", f.Spec.Port)
	}

	// The same spec again, spelled with its defaults: no new revision.
	same := hello("example.test/hello:v1")
	same.Spec.Port = 8080
	f2, err := c.PutFunction(ctx, same)
	if err != nil {
		t.Fatalf("same deploy: %v", err)
	}
	if f2.Status.LatestRevision != "hello-00001" || f2.Metadata.ResourceVersion != f.Metadata.ResourceVersion {
		t.Errorf("unchanged deploy wrote: revision %q rv %s → %s", f2.Status.LatestRevision, f.Metadata.ResourceVersion, f2.Metadata.ResourceVersion)
	}

	f3, err := c.PutFunction(ctx, hello("example.test/hello:v1", api.EnvVar{Name: "A", Value: "1"}))
	if err != nil {
		t.Fatalf("changed deploy: %v", err)
	}
	if f3.Status.LatestRevision != "hello-00002" {
		t.Errorf("changed deploy made %q, want hello-00002", f3.Status.LatestRevision)
	}
	if f3.Metadata.UID != f.Metadata.UID || !f3.Metadata.CreationTimestamp.Equal(f.Metadata.CreationTimestamp) {
		t.Errorf("deploy changed server-owned metadata: %+v → %+v", f.Metadata, f3.Metadata)
	}
	if diff := cmp.Diff([]string{"hello-00001", "hello-00002"}, revisionNames(t, c, "hello")); diff != "" {
		t.Errorf("revisions (-want +got):\n%s", diff)
	}

	rev, err := client.Get[api.Revision](ctx, c, api.Key{Namespace: "default", Name: "hello-00002"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f3.Spec, rev.Spec.Template); diff != "" {
		t.Errorf("revision template differs from the function spec (-fn +rev):\n%s", diff)
	}
	old, err := client.Get[api.Revision](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	if len(old.Spec.Template.Env) != 0 {
		t.Errorf("revision 1 changed after deploy 2: env %v", old.Spec.Template.Env)
	}

	tr, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	// No replica of hello-00002 is Ready here (no node): the traffic stays
	// on hello-00001 until one is (TestDeployMovesTrafficOnceTheRevisionIsReady).
	if diff := cmp.Diff([]api.TrafficTarget{{Revision: "hello-00001", Percent: 100}}, tr.Spec.Targets); diff != "" {
		t.Errorf("traffic (-want +got):\n%s", diff)
	}
	sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00002"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 1 {
		t.Errorf("initial scale %d, want 1", sc.Spec.Replicas)
	}
}

func TestStaleWritesConflict(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	f, err := c.PutFunction(ctx, hello("example.test/hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	stale := f.Metadata.ResourceVersion

	next := *f
	next.Spec.Concurrency = 5
	if _, err := c.PutFunction(ctx, &next); err != nil {
		t.Fatalf("replace with the current resourceVersion: %v", err)
	}
	again := *f
	again.Spec.Concurrency = 7
	again.Metadata.ResourceVersion = stale
	_, err = c.PutFunction(ctx, &again)
	if !errors.Is(err, api.ErrConflict) {
		t.Fatalf("replace with a stale resourceVersion: got %v, want 409 conflict", err)
	}
	got, err := client.Get[api.Function](ctx, c, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Concurrency != 5 {
		t.Errorf("stale write changed the function: concurrency %d", got.Spec.Concurrency)
	}

	// Traffic and Scale have the same guard.
	tr, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	staleTr := tr.Metadata.ResourceVersion
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Traffic](api.Key{Namespace: "default", Name: "hello"}), tr, tr); err != nil {
		t.Fatalf("replace traffic: %v", err)
	}
	tr.Metadata.ResourceVersion = staleTr
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Traffic](api.Key{Namespace: "default", Name: "hello"}), tr, nil); !errors.Is(err, api.ErrConflict) {
		t.Errorf("stale traffic replace: got %v, want conflict", err)
	}
	// The controllers write a Scale's status as they work, so a client
	// read-modify-writes until its version is current, as any client must.
	var sc *api.Scale
	var staleSc string
	for attempt := 0; ; attempt++ {
		if sc, err = client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00002"}); err != nil {
			t.Fatal(err)
		}
		staleSc = sc.Metadata.ResourceVersion
		sc.Spec.Replicas = 3
		err = c.Do(ctx, "PUT", client.ObjectPath[api.Scale](api.Key{Namespace: "default", Name: sc.Metadata.Name}), sc, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, api.ErrConflict) || attempt == 20 {
			t.Fatalf("replace scale: %v", err)
		}
	}
	sc.Metadata.ResourceVersion = staleSc
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Scale](api.Key{Namespace: "default", Name: sc.Metadata.Name}), sc, nil); !errors.Is(err, api.ErrConflict) {
		t.Errorf("stale scale replace: got %v, want conflict", err)
	}
}

func TestDeleteFunctionCascades(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	for _, env := range []string{"1", "2"} {
		if _, err := c.PutFunction(ctx, hello("example.test/hello:v1", api.EnvVar{Name: "A", Value: env})); err != nil {
			t.Fatal(err)
		}
	}
	// A replica, as the scheduler would write it, and a neighbour that must survive.
	rep := &api.Replica{Metadata: api.ObjectMeta{Name: "hello-00002-abcde"}, Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00002"}}
	if err := c.Do(ctx, "POST", client.CollectionPath[api.Replica]("default"), rep, nil); err != nil {
		t.Fatalf("create replica: %v", err)
	}
	other := hello("example.test/hello:v1")
	other.Metadata.Name = "hello-world"
	if _, err := c.PutFunction(ctx, other); err != nil {
		t.Fatal(err)
	}

	if err := client.Delete[api.Function](ctx, c, api.Key{Namespace: "default", Name: "hello"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	for _, k := range []struct {
		kind api.Kind
		name string
	}{
		{api.FunctionKind, "hello"}, {api.TrafficKind, "hello"}, {api.RevisionKind, "hello-00001"}, {api.RevisionKind, "hello-00002"},
		{api.ScaleKind, "hello-00001"}, {api.ScaleKind, "hello-00002"}, {api.ReplicaKind, "hello-00002-abcde"},
	} {
		path := client.PathOf(k.kind, api.Key{Namespace: "default", Name: k.name})
		if err := c.Do(ctx, "GET", path, nil, &map[string]any{}); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("%s/%s after delete: got %v, want not found", k.kind.Plural, k.name, err)
		}
	}
	if got := revisionNames(t, c, "hello-world"); len(got) != 1 {
		t.Errorf("deleting hello touched hello-world's revisions: %v", got)
	}
	if err := client.Delete[api.Function](ctx, c, api.Key{Namespace: "default", Name: "hello"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second delete: got %v, want not found", err)
	}
}

func TestTrafficMustNameExistingRevisions(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	if _, err := c.PutFunction(ctx, hello("example.test/hello:v1")); err != nil {
		t.Fatal(err)
	}
	tr := &api.Traffic{Spec: api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: "hello-00001", Percent: 50}, {Revision: "hello-00009", Percent: 50}}}}
	err := c.Do(ctx, "PUT", client.ObjectPath[api.Traffic](api.Key{Namespace: "default", Name: "hello"}), tr, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != 422 || ae.Field != "spec.targets[1].revision" {
		t.Fatalf("traffic to a missing revision: got %v, want 422 on spec.targets[1].revision", err)
	}
}
