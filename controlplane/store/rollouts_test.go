package store_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

var hello = api.Key{Namespace: "default", Name: "hello"}

// deployWith deploys image with a canary strategy (nil: none) and
// keepRevisions.
func deployWith(t *testing.T, st *store.Store, image string, canary []int32, keep int32) *store.FunctionResult {
	t.Helper()
	f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: image, KeepRevisions: keep}}
	if canary != nil {
		f.Spec.Canary = &api.CanaryStrategy{Steps: canary}
	}
	api.SetDefaults(&f.Spec)
	res, err := st.PutFunction(context.Background(), f, store.CreateOrReplace)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// promote promotes the function's latest revision, as the rollout pass
// does once it has a Ready replica.
func promote(t *testing.T, st *store.Store, rev string) {
	t.Helper()
	if _, err := st.PromoteRevision(context.Background(), hello, rev); err != nil {
		t.Fatalf("promote %s: %v", rev, err)
	}
}

func trafficTargets(t *testing.T, st *store.Store) []api.TrafficTarget {
	t.Helper()
	tr, err := store.Get[api.Traffic](context.Background(), st, hello)
	if err != nil {
		t.Fatal(err)
	}
	return tr.Spec.Targets
}

func rolloutOf(t *testing.T, st *store.Store) *api.Rollout {
	t.Helper()
	ro, err := store.Get[api.Rollout](context.Background(), st, hello)
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

func TestPromoteStartsACanary(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	deployWith(t, st, "example.test/hello:v1", []int32{10, 50, 100}, 0)
	promote(t, st, "hello-00001")
	if _, err := store.Get[api.Rollout](ctx, st, hello); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("a first revision has a rollout (%v): it takes the traffic in its deploy", err)
	}

	// A change of the canary alone makes no revision.
	if res := deployWith(t, st, "example.test/hello:v1", []int32{20, 100}, 0); res.Revision != "" {
		t.Errorf("changing only the canary made revision %s", res.Revision)
	}
	deployWith(t, st, "example.test/hello:v2", []int32{20, 100}, 0)
	promote(t, st, "hello-00002")
	want := []api.TrafficTarget{{Revision: "hello-00001", Percent: 80}, {Revision: "hello-00002", Percent: 20}}
	if diff := cmp.Diff(want, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic at the canary's first step (-want +got):\n%s", diff)
	}
	ro := rolloutOf(t, st)
	if ro.Spec.Revision != "hello-00002" || ro.Spec.From != "hello-00001" || ro.Spec.Canary == nil ||
		ro.Status.Phase != api.RolloutProgressing || ro.Status.Percent != 20 || ro.Status.Step != 0 {
		t.Fatalf("rollout %+v %+v, want hello-00002 from hello-00001 progressing at 20%%", ro.Spec, ro.Status)
	}

	// The controller takes the next step: the traffic with it.
	tr, err := store.Get[api.Traffic](ctx, st, hello)
	if err != nil {
		t.Fatal(err)
	}
	next := *ro
	next.Status.Step, next.Status.Percent, next.Status.Phase = 1, 100, api.RolloutSucceeded
	tr.Spec.Targets = api.Split(tr, next.Shares())
	if _, err := st.WriteRollout(ctx, &next, tr); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.TrafficTarget{{Revision: "hello-00002", Percent: 100}}, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic after the last step (-want +got):\n%s", diff)
	}
	// Written again from the same read, it conflicts.
	if _, err := st.WriteRollout(ctx, &next, nil); !errors.Is(err, api.ErrConflict) {
		t.Errorf("a stale rollout write: %v, want a conflict", err)
	}
}

// TestPromoteSupersedesACanary: a deploy during a canary starts from where
// that canary started, and the canary's revision loses its share.
func TestPromoteSupersedesACanary(t *testing.T) {
	st, _ := newStore(t)
	deployWith(t, st, "example.test/hello:v1", []int32{10, 100}, 0)
	promote(t, st, "hello-00001")
	deployWith(t, st, "example.test/hello:v2", []int32{10, 100}, 0)
	promote(t, st, "hello-00002")
	deployWith(t, st, "example.test/hello:v3", []int32{10, 100}, 0)
	promote(t, st, "hello-00003")
	want := []api.TrafficTarget{{Revision: "hello-00001", Percent: 90}, {Revision: "hello-00003", Percent: 10}}
	if diff := cmp.Diff(want, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic (-want +got):\n%s", diff)
	}
	if ro := rolloutOf(t, st); ro.Spec.Revision != "hello-00003" || ro.Spec.From != "hello-00001" {
		t.Errorf("rollout %+v, want hello-00003 from hello-00001", ro.Spec)
	}
}

// TestPromoteKeepsAUsersSplitButNotATag: traffic a user split while the
// revision started stays; a tag added meanwhile does not stop the move.
func TestPromoteKeepsAUsersSplitButNotATag(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	setTargets := func(targets ...api.TrafficTarget) {
		t.Helper()
		tr, err := store.Get[api.Traffic](ctx, st, hello)
		if err != nil {
			t.Fatal(err)
		}
		tr.Spec.Targets = targets
		if _, err := store.Update(ctx, st, tr); err != nil {
			t.Fatal(err)
		}
	}
	deployWith(t, st, "example.test/hello:v1", nil, 0)
	promote(t, st, "hello-00001")
	deployWith(t, st, "example.test/hello:v2", nil, 0)
	setTargets(api.TrafficTarget{Revision: "hello-00001", Percent: 100, Tag: "stable"})
	promote(t, st, "hello-00002")
	want := []api.TrafficTarget{{Revision: "hello-00001", Tag: "stable"}, {Revision: "hello-00002", Percent: 100}}
	if diff := cmp.Diff(want, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic after a tag during the start (-want +got):\n%s", diff)
	}

	deployWith(t, st, "example.test/hello:v3", nil, 0)
	split := []api.TrafficTarget{{Revision: "hello-00001", Percent: 50, Tag: "stable"}, {Revision: "hello-00002", Percent: 50}}
	setTargets(split...)
	promote(t, st, "hello-00003")
	if diff := cmp.Diff(split, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic after a split during the start (-want +got):\n%s", diff)
	}
}

func TestRollback(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	deployWith(t, st, "example.test/hello:v1", nil, 0)
	promote(t, st, "hello-00001")
	reason := func(err error) string {
		var ae *api.Error
		if !errors.As(err, &ae) {
			return "not an *api.Error: " + err.Error()
		}
		return ae.Message
	}
	if _, err := st.Rollback(ctx, hello, ""); !errors.Is(err, api.ErrConflict) || !strings.Contains(reason(err), "--to REV") {
		t.Errorf("roll back a function with no rollout: %v, want a 409 that says to name the revision", err)
	}
	deployWith(t, st, "example.test/hello:v2", nil, 0)
	promote(t, st, "hello-00002")
	deployWith(t, st, "example.test/hello:v3", []int32{10, 100}, 0)
	promote(t, st, "hello-00003")

	// During the canary of hello-00003: back to hello-00002, at once.
	res, err := st.Rollback(ctx, hello, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.TrafficTarget{{Revision: "hello-00002", Percent: 100}}, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic after the rollback (-want +got):\n%s", diff)
	}
	ro := rolloutOf(t, st)
	if !ro.Spec.Rollback || ro.Spec.Revision != "hello-00002" || ro.Status.Phase != api.RolloutSucceeded ||
		!strings.Contains(ro.Status.Reason, "hello-00003") || res.From != "hello-00002" {
		t.Errorf("rollout after the rollback %+v %+v (from %s)", ro.Spec, ro.Status, res.From)
	}
	if _, err := st.Rollback(ctx, hello, "hello-00002"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("roll back to where the traffic is: %v, want a conflict", err)
	}
	var ae *api.Error
	if _, err := st.Rollback(ctx, hello, "hello-00009"); !errors.As(err, &ae) || ae.Code != http.StatusNotFound || ae.Field != "revision" {
		t.Errorf("roll back to a revision that does not exist: %v, want a 404 naming the field", err)
	}
	// To a named revision, keeping the tags.
	tr, err := store.Get[api.Traffic](ctx, st, hello)
	if err != nil {
		t.Fatal(err)
	}
	tr.Spec.Targets = append(tr.Spec.Targets, api.TrafficTarget{Revision: "hello-00003", Tag: "next"})
	if _, err := store.Update(ctx, st, tr); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Rollback(ctx, hello, "hello-00001"); err != nil {
		t.Fatal(err)
	}
	want := []api.TrafficTarget{{Revision: "hello-00001", Percent: 100}, {Revision: "hello-00003", Tag: "next"}}
	if diff := cmp.Diff(want, trafficTargets(t, st)); diff != "" {
		t.Errorf("traffic after a rollback to hello-00001 (-want +got):\n%s", diff)
	}
}

func TestDeleteAndPruneRevisions(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for i, img := range []string{"v1", "v2", "v3", "v4", "v5", "v6"} {
		deployWith(t, st, "example.test/hello:"+img, nil, 0)
		promote(t, st, api.RevisionName("hello", int64(i+1)))
	}
	// hello-00006 takes the traffic, came from hello-00005; tag hello-00002.
	tr, err := store.Get[api.Traffic](ctx, st, hello)
	if err != nil {
		t.Fatal(err)
	}
	tr.Spec.Targets = append(tr.Spec.Targets, api.TrafficTarget{Revision: "hello-00002", Tag: "old"})
	if _, err := store.Update(ctx, st, tr); err != nil {
		t.Fatal(err)
	}
	for rev, why := range map[string]string{
		"hello-00006": "traffic", "hello-00002": "tagged", "hello-00005": "roll back",
	} {
		err := st.DeleteRevision(ctx, api.Key{Namespace: "default", Name: rev})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != http.StatusConflict || !strings.Contains(ae.Message, why) {
			t.Errorf("delete %s: %v, want a 409 saying %q", rev, err, why)
		}
	}
	if err := st.DeleteRevision(ctx, api.Key{Namespace: "default", Name: "hello-00009"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("delete a missing revision: %v, want not found", err)
	}
	if err := st.DeleteRevision(ctx, api.Key{Namespace: "default", Name: "hello-00003"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []func(api.Key) error{getter[api.Revision](ctx, st), getter[api.Scale](ctx, st)} {
		if err := k(api.Key{Namespace: "default", Name: "hello-00003"}); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("after the delete: %v, want the revision and its scale gone", err)
		}
	}
	// Left free: 1, 4. Keeping one deletes hello-00001.
	gone, err := st.PruneRevisions(ctx, hello, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"hello-00001"}, gone); diff != "" {
		t.Errorf("pruned (-want +got):\n%s", diff)
	}
	revs, _, err := store.List[api.Revision](ctx, st, store.Scope{Namespace: "default", Function: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, r := range revs {
		left = append(left, r.Metadata.Name)
	}
	if diff := cmp.Diff([]string{"hello-00002", "hello-00004", "hello-00005", "hello-00006"}, left); diff != "" {
		t.Errorf("revisions left (-want +got):\n%s", diff)
	}
	// The function's delete takes its rollout along.
	if err := st.DeleteFunction(ctx, hello, ""); err != nil {
		t.Fatal(err)
	}
	if n := count[api.Rollout](t, st); n != 0 {
		t.Errorf("rollouts after the function's delete: %d", n)
	}
}
