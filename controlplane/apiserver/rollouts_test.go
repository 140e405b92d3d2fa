package apiserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// TestRollbackActivatesFirst: a rollback to a revision at zero asks for
// its replica, then moves all the traffic; the rollout records it, and is
// read-only otherwise.
func TestRollbackActivatesFirst(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	fn := api.Key{Namespace: "default", Name: "hello"}
	e.deploy("hello", "example.test/hello:v1")
	e.deploy("hello", "example.test/hello:v2")
	if _, err := e.store.PromoteRevision(ctx, fn, "hello-00002"); err != nil {
		t.Fatal(err)
	}
	old := api.Key{Namespace: "default", Name: "hello-00001"}
	if _, err := store.SetScaleReplicas(ctx, e.store, old, 1, 0); err != nil {
		t.Fatal(err)
	}
	const path = "/v1/namespaces/default/rollouts/hello/rollback"
	if a := e.do("POST", path, e.token(auth.RoleViewer), ""); a.code != http.StatusForbidden {
		t.Errorf("a viewer rolls back: %d, want 403", a.code)
	}
	a := e.do("POST", path, e.admin, "")
	var out api.RollbackResponse
	if err := json.Unmarshal(a.body, &out); err != nil || a.code != http.StatusOK {
		t.Fatalf("rollback: %d %s", a.code, a.body)
	}
	if ro := out.Rollout; !out.Activated || ro.Spec.Revision != "hello-00001" || ro.Spec.From != "hello-00002" || !ro.Spec.Rollback {
		t.Errorf("rollback answered %+v", out)
	}
	sc, err := store.Get[api.Scale](ctx, e.store, old)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 1 {
		t.Errorf("hello-00001 asks for %d replicas after the rollback, want 1", sc.Spec.Replicas)
	}
	e.mu.Lock()
	activated := append([]string(nil), e.activated...)
	e.mu.Unlock()
	if diff := cmp.Diff([]string{"hello-00001 1"}, activated); diff != "" {
		t.Errorf("OnActivate calls (-want +got):\n%s", diff)
	}
	var tr api.Traffic
	e.getJSON("/v1/namespaces/default/traffic/hello", &tr)
	if diff := cmp.Diff([]api.TrafficTarget{{Revision: "hello-00001", Percent: 100}}, tr.Spec.Targets); diff != "" {
		t.Errorf("traffic (-want +got):\n%s", diff)
	}
	var ro api.Rollout
	e.getJSON("/v1/namespaces/default/rollouts/hello", &ro)
	if ro.Kind != api.KindRollout || ro.Spec.Revision != "hello-00001" {
		t.Errorf("GET the rollout: %+v", ro)
	}

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		field, says              string
	}{
		{"again", "POST", path, `{"revision":"hello-00001"}`, http.StatusConflict, "", "already"},
		{"a revision of another function", "POST", path, `{"revision":"world-00001"}`, http.StatusBadRequest, "revision", ""},
		{"a revision that does not exist", "POST", path, `{"revision":"hello-00009"}`, http.StatusNotFound, "revision", "surge revisions hello"},
		{"a function that does not exist", "POST", "/v1/namespaces/default/rollouts/nope/rollback", ``, http.StatusNotFound, "", ""},
		{"rollouts are the system's", "PUT", "/v1/namespaces/default/rollouts/hello", `{"spec":{"revision":"hello-00002"}}`, http.StatusMethodNotAllowed, "", ""},
		{"the revision with the traffic is kept", "DELETE", "/v1/namespaces/default/revisions/hello-00001", ``, http.StatusConflict, "", "traffic"},
		{"the latest is kept", "DELETE", "/v1/namespaces/default/revisions/hello-00002", ``, http.StatusConflict, "", "latest"},
	} {
		a := e.do(tc.method, tc.path, e.admin, tc.body)
		if a.code != tc.code || a.err.Field != tc.field || !strings.Contains(a.err.Message, tc.says) {
			t.Errorf("%s: %d field %q %q, want %d field %q saying %q", tc.name, a.code, a.err.Field, a.err.Message, tc.code, tc.field, tc.says)
		}
	}
	// A revision nothing keeps is deleted, with its scale.
	e.deploy("hello", "example.test/hello:v3")
	if _, err := e.store.PromoteRevision(ctx, fn, "hello-00003"); err != nil {
		t.Fatal(err)
	}
	e.deploy("hello", "example.test/hello:v4")
	if _, err := e.store.PromoteRevision(ctx, fn, "hello-00004"); err != nil {
		t.Fatal(err)
	}
	if a := e.do("DELETE", "/v1/namespaces/default/revisions/hello-00001", e.admin, ""); a.code != http.StatusOK {
		t.Errorf("delete hello-00001: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/v1/namespaces/default/scales/hello-00001", e.admin, ""); a.code != http.StatusNotFound {
		t.Errorf("the deleted revision's scale: %d, want 404", a.code)
	}
}
