package apiserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// TestFunctionURLAndPinning: the answers about a function carry its URL,
// and a deploy pins the digest ResolveImage gives; an *api.Error from it
// refuses the deploy, any other error leaves the revision unpinned.
func TestFunctionURLAndPinning(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	e := newEnv(t, func(c *apiserver.Config) {
		c.FunctionURL = func(k api.Key) string { return "http://" + k.Name + "." + k.Namespace + ".test" }
		c.ResolveImage = func(_ context.Context, f *api.Function) (string, error) {
			switch {
			case strings.HasSuffix(f.Spec.Image, ":refused"):
				return "", api.Invalid(api.KindFunction, f.Metadata.Name, api.FieldErrors{{Field: "spec.imagePullSecrets[0]", Message: "does not exist"}})
			case strings.HasSuffix(f.Spec.Image, ":offline"):
				return "", errors.New("registry unreachable")
			}
			return digest, nil
		}
	})
	f := e.deploy("hello", "example.test/hello:v1")
	if f.Status.URL != "http://hello.default.test" || f.Status.ImageDigest != digest {
		t.Errorf("deploy answer: url %q, digest %q", f.Status.URL, f.Status.ImageDigest)
	}
	var got api.Function
	if a := e.do("GET", "/v1/namespaces/default/functions/hello", e.admin, ""); json.Unmarshal(a.body, &got) != nil || got.Status.URL != "http://hello.default.test" {
		t.Errorf("get: %d %s, want the URL", a.code, a.body)
	}
	var list api.List[api.Function]
	if a := e.do("GET", "/v1/functions", e.admin, ""); json.Unmarshal(a.body, &list) != nil || len(list.Items) != 1 || list.Items[0].Status.URL == "" {
		t.Errorf("list: %d %s, want the URL", a.code, a.body)
	}
	var rev api.Revision
	e.getJSON("/v1/namespaces/default/revisions/hello-00001", &rev)
	if rev.Spec.Image() != "example.test/hello:v1@"+digest {
		t.Errorf("revision runs %q, want the pinned digest", rev.Spec.Image())
	}

	a := e.do("PUT", "/v1/namespaces/default/functions/hello", e.admin, `{"spec":{"image":"example.test/hello:refused"}}`)
	if a.code != http.StatusUnprocessableEntity || a.err.Field != "spec.imagePullSecrets[0]" {
		t.Errorf("a refused image: %d %s, want 422 naming the field", a.code, a.body)
	}
	if f := e.deploy("hello", "example.test/hello:offline"); f.Status.LatestRevision != "hello-00002" || f.Status.ImageDigest != "" {
		t.Errorf("an unresolvable image: %+v, want hello-00002 unpinned", f.Status)
	}
}

func (e *env) getJSON(path string, out any) {
	e.t.Helper()
	a := e.do("GET", path, e.admin, "")
	if a.code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, a.code, a.body)
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		e.t.Fatal(err)
	}
}

// TestPullSecretsAreRedacted: only admins and nodes read a pull secret's
// password, in gets, lists and writes' answers; a bad one names its field.
func TestPullSecretsAreRedacted(t *testing.T) {
	e := newEnv(t)
	body := `{"metadata":{"name":"ghcr"},"spec":{"registry":"ghcr.io","username":"me","password":"s3cret"}}`
	if a := e.do("POST", "/v1/namespaces/default/pullsecrets", e.admin, body); a.code != http.StatusCreated || !strings.Contains(string(a.body), "s3cret") {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	for _, tc := range []struct {
		role auth.Role
		see  bool
	}{{auth.RoleAdmin, true}, {auth.RoleViewer, false}, {auth.RoleGateway, false}} {
		tok := e.token(tc.role)
		for _, p := range []string{"/v1/namespaces/default/pullsecrets/ghcr", "/v1/namespaces/default/pullsecrets", "/v1/pullsecrets"} {
			a := e.do("GET", p, tok, "")
			if a.code != http.StatusOK || strings.Contains(string(a.body), "s3cret") != tc.see {
				t.Errorf("%s GET %s: %d %s; want the password shown: %v", tc.role, p, a.code, a.body, tc.see)
			}
		}
	}
	// A node reads them, password and all, in the namespaces it runs
	// replicas of; the join token reads nothing.
	joinToken := e.token(auth.RoleNode)
	node := e.join(joinToken, "node-a", "127.0.0.1")
	if a := e.doWith(node, "POST", "/v1/nodes", "", `{"metadata":{"name":"node-a"}}`, "application/json"); a.code != http.StatusCreated {
		t.Fatalf("register node-a: %d %s", a.code, a.body)
	}
	e.deploy("hello", "example.test/hello:v1")
	if a := e.do("POST", "/v1/namespaces/default/replicas", e.admin, `{"metadata":{"name":"hello-00001-aaaaa"},"spec":{"function":"hello","revision":"hello-00001","nodeName":"node-a"}}`); a.code != http.StatusCreated {
		t.Fatalf("replica: %d %s", a.code, a.body)
	}
	for _, p := range []string{"/v1/namespaces/default/pullsecrets/ghcr", "/v1/namespaces/default/pullsecrets"} {
		if a := e.doWith(node, "GET", p, "", "", ""); a.code != http.StatusOK || !strings.Contains(string(a.body), "s3cret") {
			t.Errorf("node GET %s: %d %s; want the password shown", p, a.code, a.body)
		}
	}
	if a := e.doWith(node, "GET", "/v1/pullsecrets", "", "", ""); a.code != http.StatusForbidden {
		t.Errorf("node GET /v1/pullsecrets: %d %s; want 403", a.code, a.body)
	}
	if a := e.do("GET", "/v1/namespaces/default/pullsecrets/ghcr", joinToken, ""); a.code != http.StatusForbidden {
		t.Errorf("join token GET a pull secret: %d %s; want 403", a.code, a.body)
	}
	a := e.do("POST", "/v1/namespaces/default/pullsecrets", e.admin, `{"metadata":{"name":"bad"},"spec":{"registry":"https://ghcr.io/x","password":"p"}}`)
	if a.code != http.StatusUnprocessableEntity || a.err.Field != "spec.registry" {
		t.Errorf("bad registry: %d %s, want 422 naming spec.registry", a.code, a.body)
	}
	if a := e.do("POST", "/v1/namespaces/default/pullsecrets", e.token(auth.RoleViewer), body); a.code != http.StatusForbidden {
		t.Errorf("a viewer writes a pull secret: %d, want 403", a.code)
	}
}

// TestRegistryTakesBasicAuth: docker login and crane send the token as a
// basic-auth password after a Basic challenge; the rest of the API wants
// a bearer token.
func TestRegistryTakesBasicAuth(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.url+"/v2/", nil)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("GET /v2/ without credentials: %d, WWW-Authenticate %q; want 401 and a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	for _, tc := range []struct {
		path, pass string
		want       int
	}{
		{"/v2/", e.admin, http.StatusOK},
		{"/v2/", "wrong", http.StatusUnauthorized},
		{"/v1/version", e.admin, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest("GET", e.url+tc.path, nil)
		req.SetBasicAuth("anyone", tc.pass)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with basic auth: %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
	}
}

type fixedLoad map[api.Key]autoscaler.Load

func (l fixedLoad) Load(context.Context, time.Time) (map[api.Key]autoscaler.Load, error) {
	return l, nil
}

// TestStatsRead: GET /v1/stats answers each revision's summed load.
func TestStatsRead(t *testing.T) {
	e := newEnv(t, func(c *apiserver.Config) {
		c.Load = fixedLoad{
			{Namespace: "default", Name: "hello-00002"}: {RPS: 12.5, Sample: autoscaler.Sample{Concurrency: 3}},
			{Namespace: "a", Name: "world-00001"}:       {RPS: 1},
		}
	})
	var got api.List[api.RevisionRate]
	e.getJSON("/v1/stats", &got)
	want := []api.RevisionRate{
		{Namespace: "a", Function: "world", Revision: "world-00001", RPS: 1},
		{Namespace: "default", Function: "hello", Revision: "hello-00002", Concurrency: 3, RPS: 12.5},
	}
	if len(got.Items) != 2 || got.Items[0] != want[0] || got.Items[1] != want[1] {
		t.Errorf("stats = %+v, want %+v", got.Items, want)
	}
}

// TestStatsBounded: a gateway token's load reports are bounded — the
// revisions in one report, a revision's load in it, and the gateway names
// one token reports under — so that a stolen gateway token cannot ask
// the autoscaler for every replica the cluster has, nor fill etcd with
// names.
func TestStatsBounded(t *testing.T) {
	e := newEnv(t, func(c *apiserver.Config) {
		c.Limits.MaxGatewaysPerToken, c.Limits.MaxReportedRevisions, c.Limits.MaxReportedLoad = 2, 2, 50
	})
	gw := e.token(auth.RoleGateway)
	report := func(gateway string, loads ...string) answer {
		return e.do("POST", "/v1/stats", gw, `{"gateway":"`+gateway+`","window":"2s","revisions":[`+strings.Join(loads, ",")+`]}`)
	}
	load := func(rev string, concurrency float64, requests int) string {
		return fmt.Sprintf(`{"namespace":"default","function":"hello","revision":%q,"concurrency":%v,"requests":%d}`, rev, concurrency, requests)
	}
	for _, tc := range []struct {
		name  string
		a     answer
		code  int
		field string
	}{
		{"within the limits", report("gw-1", load("hello-00001", 50, 100), load("hello-00002", 1, 1)), 204, ""},
		{"three revisions", report("gw-1", load("hello-00001", 1, 1), load("hello-00002", 1, 1), load("hello-00003", 1, 1)), 422, "revisions"},
		{"concurrency above the limit", report("gw-1", load("hello-00001", 50.5, 1)), 422, "revisions[0]"},
		{"requests per second above the limit", report("gw-1", load("hello-00001", 1, 101)), 422, "revisions[0]"},
		{"a second name", report("gw-2", load("hello-00001", 1, 1)), 204, ""},
		{"a third name", report("gw-3", load("hello-00001", 1, 1)), 429, ""},
		{"a known name again", report("gw-1", load("hello-00001", 1, 1)), 204, ""},
	} {
		if tc.a.code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, tc.a.code, tc.a.body, tc.code)
			continue
		}
		if tc.field != "" && (tc.a.err.Field != tc.field || !strings.Contains(tc.a.err.Message, "limit")) {
			t.Errorf("%s: %+v, want field %s named with its limit", tc.name, tc.a.err, tc.field)
		}
		if tc.code == 429 && (tc.a.err.Reason != apiserver.ReasonTooManyGateways || !strings.Contains(tc.a.err.Message, "surge token create --role gateway")) {
			t.Errorf("%s: %+v, want TooManyGateways saying what to do", tc.name, tc.a.err)
		}
	}
}
