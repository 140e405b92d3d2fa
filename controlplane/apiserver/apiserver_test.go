package apiserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is an API server on httptest, over a real store on an embedded etcd.
type env struct {
	t      *testing.T
	url    string
	etcd   *clientv3.Client
	store  *store.Store
	tokens *auth.Store
	reg    *prometheus.Registry
	admin  string

	// http trusts the test server; nodeCA certifies nodes; clk is the
	// server's clock.
	http   *http.Client
	nodeCA *pki.NodeCA
	clk    *clock.Fake

	mu        sync.Mutex
	activated []string // "revision demand" of every OnActivate call
}

// testGossipKey is the gossip key the test server hands out.
var testGossipKey = []byte("surge-apiserver-test-gossip-key0")

func newEnv(t *testing.T, configure ...func(*apiserver.Config)) *env {
	t.Helper()
	cli := etcdtest.Start(t)
	clk := clock.NewFake()
	nodeCA, err := pki.LoadOrCreateNodeCA(t.TempDir(), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, etcd: cli, store: store.New(cli, clk), tokens: auth.NewStore(cli, clk), reg: prometheus.NewRegistry(), nodeCA: nodeCA, clk: clk}
	cfg := apiserver.Config{
		Store: e.store, Tokens: e.tokens, Registerer: e.reg, Version: "v-test", Clock: clk,
		PodCIDR: netip.MustParsePrefix("10.244.0.0/16"), NodeSubnetBits: 24,
		OnActivate: func(rev *api.Revision, demand int32) int32 {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.activated = append(e.activated, fmt.Sprintf("%s %d", rev.Metadata.Name, demand))
			return (demand + 99) / 100 // 100 per replica
		},
		NodeCA: nodeCA, GossipKey: testGossipKey,
		Extra: []apiserver.Route{
			{Pattern: "GET /v2/", Resource: auth.ResourceRegistry, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "registry") })},
			{Pattern: "PUT /v2/", Resource: auth.ResourceRegistry, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })},
		},
	}
	for _, c := range configure {
		c(&cfg)
	}
	h, err := apiserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// As the real listener: TLS, a client certificate asked for, not
	// required (nodes send theirs, token holders none).
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.url, e.http = srv.URL, srv.Client()
	e.admin = e.token(auth.RoleAdmin)
	return e
}

// token makes a token of role.
func (e *env) token(role auth.Role) string {
	e.t.Helper()
	secret, _, err := e.tokens.Create(context.Background(), role, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// answer is a response, read whole.
type answer struct {
	code int
	body []byte
	err  api.Error // the JSON error, for non-2xx answers
}

func (e *env) do(method, path, token, body string) answer {
	e.t.Helper()
	return e.doType(method, path, token, body, "application/json")
}

func (e *env) doType(method, path, token, body, contentType string) answer {
	e.t.Helper()
	return e.doWith(e.http, method, path, token, body, contentType)
}

// doWith is doType with another HTTP client (a node's, with its
// certificate).
func (e *env) doWith(c *http.Client, method, path, token, body, contentType string) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		e.t.Fatal(err)
	}
	if a.code >= 300 {
		if err := json.Unmarshal(a.body, &a.err); err != nil || a.err.Message == "" {
			e.t.Errorf("%s %s: %d answer is not a JSON error: %q", method, path, a.code, a.body)
		}
	}
	return a
}

func (e *env) deploy(name, image string) *api.Function {
	e.t.Helper()
	a := e.do("PUT", "/v1/namespaces/default/functions/"+name, e.admin, `{"spec":{"image":"`+image+`"}}`)
	if a.code != http.StatusCreated && a.code != http.StatusOK {
		e.t.Fatalf("deploy %s: %d %s", name, a.code, a.body)
	}
	var f api.Function
	if err := json.Unmarshal(a.body, &f); err != nil {
		e.t.Fatal(err)
	}
	return &f
}

func TestNewNeedsStoreAndTokens(t *testing.T) {
	_, err := apiserver.New(apiserver.Config{})
	for _, field := range []string{"Store", "Tokens"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("New = %v, want an error naming %s", err, field)
		}
	}
}

func TestProbesAndVersion(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if a := e.do("GET", p, "", ""); a.code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", p, a.code)
		}
	}
	a := e.do("GET", "/v1/version", e.admin, "")
	var v map[string]string
	if err := json.Unmarshal(a.body, &v); err != nil || v["version"] != "v-test" || v["api"] != api.Version {
		t.Errorf("version: %d %s", a.code, a.body)
	}

	// etcd's words (addresses, members, certificates) are for the log,
	// not for whoever asks /readyz.
	var log bytes.Buffer
	down := newEnv(t, func(c *apiserver.Config) {
		c.Log = slog.New(slog.NewTextHandler(&log, nil))
		c.Ready = func(context.Context) error {
			return errors.New("context deadline exceeded: dial tcp 10.9.8.7:2379: etcd member s3 unreachable")
		}
	})
	a = down.do("GET", "/readyz", "", "")
	if a.code != http.StatusServiceUnavailable || strings.Contains(string(a.body), "10.9.8.7") || strings.Contains(string(a.body), "etcd member") {
		t.Errorf("readyz with etcd down: %d %s, want 503 without etcd's error", a.code, a.body)
	}
	if !strings.Contains(log.String(), "etcd member s3 unreachable") {
		t.Errorf("the log does not say why the server is not ready:\n%s", log.String())
	}
}

func TestEveryRouteButTheProbesNeedsAToken(t *testing.T) {
	e := newEnv(t)
	id, _, _ := strings.Cut(e.admin, ".")
	revoked := e.token(auth.RoleViewer)
	rid, _, _ := strings.Cut(revoked, ".")
	if ok, err := e.tokens.Delete(context.Background(), rid); err != nil || !ok {
		t.Fatal(err)
	}
	for _, path := range []string{"/metrics", "/v1/version", "/v1/functions", "/v1/nodes", "/v1/tokens", "/v2/", "/v1/no-such-route"} {
		for _, tok := range []struct{ name, value string }{
			{"none", ""}, {"garbage", "not-a-token"}, {"wrong secret", id + ".AAAA"}, {"revoked", revoked},
		} {
			a := e.do("GET", path, tok.value, "")
			if a.code != http.StatusUnauthorized || a.err.Reason != api.ReasonUnauthorized {
				t.Errorf("GET %s with token %s: %d %q, want 401", path, tok.name, a.code, a.err.Reason)
			}
		}
	}
	if a := e.do("GET", "/v1/functions", "", ""); !strings.Contains(a.err.Message, "Authorization: Bearer") {
		t.Errorf("401 without a token says %q, want how to send one", a.err.Message)
	}
	if a := e.do("GET", "/v1/no-such-route", e.admin, ""); a.code != http.StatusNotFound || !strings.Contains(a.err.Message, "/v1/no-such-route") {
		t.Errorf("an unknown route: %d %q, want 404 naming it", a.code, a.err.Message)
	}
}

func TestRolesAreChecked(t *testing.T) {
	e := newEnv(t)
	e.deploy("hello", "example.test/hello:v1")
	viewer, node, gateway := e.token(auth.RoleViewer), e.token(auth.RoleNode), e.token(auth.RoleGateway)
	replica := `{"metadata":{"name":"hello-00001-abcde"},"spec":{"function":"hello","revision":"hello-00001"}}`
	for _, tc := range []struct {
		name, token, method, path, body string
		code                            int
	}{
		{"viewer reads", viewer, "GET", "/v1/namespaces/default/functions/hello", "", 200},
		{"viewer deploys", viewer, "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x"}}`, 403},
		{"viewer lists tokens", viewer, "GET", "/v1/tokens", "", 403},
		{"viewer pulls", viewer, "GET", "/v2/", "", 200},
		{"viewer pushes", viewer, "PUT", "/v2/x/blobs/uploads/1", "", 403},
		// The join token (a node-role token) only bootstraps.
		{"join token writes a replica", node, "POST", "/v1/namespaces/default/replicas", replica, 403},
		{"join token reads", node, "GET", "/v1/namespaces/default/functions/hello", "", 403},
		{"join token pulls", node, "GET", "/v2/", "", 403},
		{"node deploys", node, "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x"}}`, 403},
		{"gateway activates", gateway, "POST", "/v1/namespaces/default/scales/hello-00001/activate", "", 200},
		{"gateway writes a replica", gateway, "DELETE", "/v1/namespaces/default/replicas/hello-00001-abcde", "", 403},
		// The gossip key is for its members (nodes by their certificate,
		// gateways), not the join token's nor a reader's.
		{"join token gets the gossip key", node, "GET", "/v1/gossip/key", "", 403},
		{"viewer gets the gossip key", viewer, "GET", "/v1/gossip/key", "", 403},
		{"gateway gets the gossip key", gateway, "GET", "/v1/gossip/key", "", 200},
		{"admin pushes", e.admin, "PUT", "/v2/x/blobs/uploads/1", "", 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(tc.method, tc.path, tc.token, tc.body)
			if a.code != tc.code {
				t.Fatalf("%d %s, want %d", a.code, a.body, tc.code)
			}
			if a.code == http.StatusForbidden && !strings.Contains(a.err.Message, "role") {
				t.Errorf("403 says %q, want it to name the role", a.err.Message)
			}
			if tc.path == "/v1/gossip/key" && a.code == http.StatusOK && string(a.body) != `{"key":"`+hex.EncodeToString(testGossipKey)+`"}`+"\n" {
				t.Errorf("gossip key answer %s", a.body)
			}
		})
	}
}

func TestBadRequestsNameTheField(t *testing.T) {
	e := newEnv(t)
	e.deploy("hello", "example.test/hello:v1")
	big := `{"metadata":{"name":"big"},"spec":{"image":"x","args":["` + strings.Repeat("a", apiserver.MaxBodyBytes) + `"]}}`
	fn := "/v1/namespaces/default/functions/hello"
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		field                    string
	}{
		{"bad name", "POST", "/v1/namespaces/default/functions", `{"metadata":{"name":"Bad_Name"},"spec":{"image":"x"}}`, 422, "metadata.name"},
		{"bad port", "PUT", fn, `{"spec":{"image":"x","port":70000}}`, 422, "spec.port"},
		{"port not a number", "PUT", fn, `{"spec":{"image":"x","port":"80"}}`, 400, "spec.port"},
		{"timeout not a duration", "PUT", fn, `{"spec":{"image":"x","timeout":"abc"}}`, 400, "spec.timeout"},
		{"window without a unit", "PUT", fn, `{"spec":{"image":"x","scaling":{"stableWindow":"60"}}}`, 400, "spec.scaling.stableWindow"},
		{"timeout out of range", "PUT", fn, `{"spec":{"image":"x","timeout":"2h"}}`, 422, "spec.timeout"},
		{"stats window not a duration", "POST", "/v1/stats", `{"gateway":"gw-1","window":"soon","revisions":[]}`, 400, "window"},
		{"unknown field", "PUT", fn, `{"spec":{"image":"x","replicas":3}}`, 400, "replicas"},
		{"no image", "PUT", fn, `{"spec":{}}`, 422, "spec.image"},
		{"name mismatch", "PUT", fn, `{"metadata":{"name":"other"},"spec":{"image":"x"}}`, 400, "metadata.name"},
		{"namespace mismatch", "PUT", fn, `{"metadata":{"namespace":"team"},"spec":{"image":"x"}}`, 400, "metadata.namespace"},
		{"bad namespace", "PUT", "/v1/namespaces/Bad/functions/hello", `{"spec":{"image":"x"}}`, 422, "metadata.namespace"},
		{"not json", "PUT", fn, `{"spec":`, 400, ""},
		{"trailing data", "PUT", fn, `{"spec":{"image":"x"}} {}`, 400, ""},
		{"empty body", "PUT", fn, ``, 400, ""},
		{"too large", "PUT", "/v1/namespaces/default/functions/big", big, 413, ""},
		{"traffic to a missing revision", "PUT", "/v1/namespaces/default/traffic/hello",
			`{"spec":{"targets":[{"revision":"hello-00001","percent":50},{"revision":"hello-00009","percent":50}]}}`, 422, "spec.targets[1].revision"},
		{"replica of another function's revision", "POST", "/v1/namespaces/default/replicas",
			`{"metadata":{"name":"hello-00001-abcde"},"spec":{"function":"other","revision":"hello-00001"}}`, 422, "spec.function"},
		{"replica name", "POST", "/v1/namespaces/default/replicas",
			`{"metadata":{"name":"x"},"spec":{"function":"hello","revision":"hello-00001"}}`, 422, "metadata.name"},
		{"node name", "POST", "/v1/nodes", `{"metadata":{"name":"Node_A"}}`, 422, "metadata.name"},
		{"revisions are the system's", "POST", "/v1/namespaces/default/revisions", `{"metadata":{"name":"hello-00001"}}`, 405, ""},
		{"bad token role", "POST", "/v1/tokens", `{"role":"root"}`, 422, "role"},
		{"bad resourceVersion", "DELETE", fn + "?resourceVersion=abc", ``, 400, ""},
		{"function filter on functions", "GET", "/v1/namespaces/default/functions?function=hello", ``, 400, ""},
		{"bad function filter", "GET", "/v1/namespaces/default/replicas?function=Bad_", ``, 400, "function"},
		{"two node filters", "GET", "/v1/namespaces/default/replicas?node=a&node=b", ``, 400, "node"},
		{"bad stats", "POST", "/v1/stats", `{"gateway":"gw 1","revisions":[{"revision":"hello"}]}`, 422, "gateway"},
		{"more errors than requests", "POST", "/v1/stats",
			`{"gateway":"gw-1","revisions":[{"revision":"hello-00001","outcomes":{"requests":1,"errors":2}}]}`, 422, "revisions[0].outcomes"},
		{"bad csr", "POST", "/v1/nodes/n1/bootstrap", `{"csr":"bad","address":"127.0.0.1"}`, 400, "csr"},
		{"bad node address", "POST", "/v1/nodes/n1/bootstrap", `{"csr":"x","address":"here"}`, 400, "address"},
		{"bad certificate usage", "POST", "/v1/nodes/n1/certificate", `{"csr":"x","usage":"both"}`, 403, ""}, // for nodes only
		{"agent URL not at the node's address", "POST", "/v1/nodes", `{"metadata":{"name":"n2"},"status":{"address":"10.0.0.5","agentURL":"http://10.0.0.5:7073"}}`, 422, "status.agentURL"},
		{"replica IP not an IP", "PUT", "/v1/namespaces/default/replicas/hello-00001-abcde/status", `{"status":{"phase":"Ready","ip":"here","port":8080}}`, 422, "status.ip"},
		{"Ready without a port", "PUT", "/v1/namespaces/default/replicas/hello-00001-abcde/status", `{"status":{"phase":"Ready","ip":"10.244.0.5"}}`, 422, "status.phase"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(tc.method, tc.path, e.admin, tc.body)
			if a.code != tc.code || a.err.Field != tc.field {
				t.Errorf("got %d field %q (%s), want %d field %q", a.code, a.err.Field, a.err.Message, tc.code, tc.field)
			}
		})
	}
	a := e.doType("PUT", fn, e.admin, `{"spec":{"image":"x"}}`, "text/plain")
	if a.code != http.StatusUnsupportedMediaType || !strings.Contains(a.err.Message, "application/json") {
		t.Errorf("a text body: %d %q, want 415 asking for JSON", a.code, a.err.Message)
	}
}

// TestBadDurationIsA400NamingTheField pins the answer to a duration that
// does not parse: the decode fails, and the answer names the field and the
// rule, with the value sent.
func TestBadDurationIsA400NamingTheField(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, body, want string }{
		{"a string", `{"spec":{"image":"x","readiness":{"period":"10 s"}}}`,
			`{"code":400,"reason":"BadRequest","error":` + strconv.Quote(api.DurationRule+`, got a JSON string "10 s"`) + `,"field":"spec.readiness.period"}`},
		{"a number", `{"spec":{"image":"x","timeout":30}}`,
			`{"code":400,"reason":"BadRequest","error":` + strconv.Quote(api.DurationRule+`, got a JSON number`) + `,"field":"spec.timeout"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do("PUT", "/v1/namespaces/default/functions/hello", e.admin, tc.body)
			if got := strings.TrimSpace(string(a.body)); a.code != http.StatusBadRequest || got != tc.want {
				t.Errorf("answer %d %s\nwant 400 %s", a.code, got, tc.want)
			}
		})
	}
}

func TestFunctionsRoundTrip(t *testing.T) {
	e := newEnv(t)
	a := e.do("POST", "/v1/namespaces/default/functions", e.admin, `{"metadata":{"name":"hello"},"spec":{"image":"example.test/hello:v1"}}`)
	if a.code != http.StatusCreated {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	if a := e.do("POST", "/v1/namespaces/default/functions", e.admin, `{"metadata":{"name":"hello"},"spec":{"image":"example.test/hello:v1"}}`); a.code != http.StatusConflict {
		t.Errorf("create again: %d, want 409", a.code)
	}
	// PUT creates too, answering 201 then; and 200 once it exists.
	if a := e.do("PUT", "/v1/namespaces/team/functions/hello", e.admin, `{"spec":{"image":"example.test/hello:v1"}}`); a.code != http.StatusCreated {
		t.Errorf("PUT a new function: %d, want 201", a.code)
	}
	f := e.deploy("hello", "example.test/hello:v2")
	if f.Status.LatestRevision != "hello-00002" || f.Spec.Port != api.DefaultPort {
		t.Errorf("deploy: revision %q port %d, want hello-00002 with the default port", f.Status.LatestRevision, f.Spec.Port)
	}

	var all api.List[api.Function]
	if err := json.Unmarshal(e.do("GET", "/v1/functions", e.admin, "").body, &all); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range all.Items {
		names = append(names, api.KeyOf(&f).String())
	}
	if diff := cmp.Diff([]string{"default/hello", "team/hello"}, names); diff != "" || all.ResourceVersion == "" {
		t.Errorf("list (-want +got):\n%s (resourceVersion %q)", diff, all.ResourceVersion)
	}
	var revs api.List[api.Revision]
	if err := json.Unmarshal(e.do("GET", "/v1/namespaces/default/revisions?function=hello", e.admin, "").body, &revs); err != nil || len(revs.Items) != 2 {
		t.Errorf("revisions of hello: %+v, %v; want 2", revs.Items, err)
	}

	if a := e.do("DELETE", "/v1/namespaces/default/functions/hello", e.admin, ""); a.code != http.StatusOK {
		t.Errorf("delete: %d %s", a.code, a.body)
	}
	a = e.do("GET", "/v1/namespaces/default/functions/hello", e.admin, "")
	if a.code != http.StatusNotFound || a.err.Reason != api.ReasonNotFound {
		t.Errorf("get after delete: %d %q, want 404", a.code, a.err.Reason)
	}
}

func TestReplicaStatusAndFilters(t *testing.T) {
	e := newEnv(t)
	e.deploy("hello", "example.test/hello:v1")
	for _, r := range []struct{ name, node string }{{"hello-00001-aaaaa", "node-a"}, {"hello-00001-bbbbb", "node-b"}} {
		body := fmt.Sprintf(`{"metadata":{"name":%q},"spec":{"function":"hello","revision":"hello-00001","nodeName":%q}}`, r.name, r.node)
		if a := e.do("POST", "/v1/namespaces/default/replicas", e.admin, body); a.code != http.StatusCreated {
			t.Fatalf("create replica: %d %s", a.code, a.body)
		}
	}
	// The agent's status write cannot move its replica.
	a := e.do("PUT", "/v1/namespaces/default/replicas/hello-00001-aaaaa/status", e.admin,
		`{"spec":{"function":"hello","revision":"hello-00001","nodeName":"elsewhere"},"status":{"phase":"Ready","ip":"10.244.0.5","port":8080}}`)
	var r api.Replica
	if err := json.Unmarshal(a.body, &r); err != nil || r.Spec.NodeName != "node-a" || r.Status.Phase != api.ReplicaReady {
		t.Errorf("status write: %d %s; want Ready on node-a", a.code, a.body)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?node=node-a", []string{"hello-00001-aaaaa"}},
		{"?node=", nil},
		{"?phase=Ready", []string{"hello-00001-aaaaa"}},
		{"?function=hello&node=node-b", []string{"hello-00001-bbbbb"}},
	} {
		var l api.List[api.Replica]
		if err := json.Unmarshal(e.do("GET", "/v1/namespaces/default/replicas"+tc.query, e.admin, "").body, &l); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range l.Items {
			names = append(names, r.Metadata.Name)
		}
		if diff := cmp.Diff(tc.want, names); diff != "" {
			t.Errorf("replicas%s (-want +got):\n%s", tc.query, diff)
		}
	}
}

// watchLines streams a watch until it has n events, and returns them.
func (e *env) watchLines(path string, n int) []api.WatchEvent[*api.Function] {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("watch %s: %d %s", path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		e.t.Errorf("watch content type %q, want application/x-ndjson", ct)
	}
	var out []api.WatchEvent[*api.Function]
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		var ev api.WatchEvent[*api.Function]
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Fatalf("watch line %q: %v", sc.Bytes(), err)
		}
		if ev.Type != api.EventBookmark {
			out = append(out, ev)
		}
	}
	if len(out) < n {
		e.t.Fatalf("watch ended after %d events (%v), want %d", len(out), sc.Err(), n)
	}
	return out
}

func TestWatchResumesFromAVersion(t *testing.T) {
	e := newEnv(t)
	var l api.List[api.Function]
	if err := json.Unmarshal(e.do("GET", "/v1/namespaces/default/functions", e.admin, "").body, &l); err != nil {
		t.Fatal(err)
	}
	e.deploy("hello", "example.test/hello:v1")
	e.deploy("world", "example.test/world:v1")

	// From the list's version: both deploys.
	got := e.watchLines("/v1/namespaces/default/functions?watch=true&resourceVersion="+l.ResourceVersion, 2)
	if got[0].Type != api.EventAdded || got[0].Object.Metadata.Name != "hello" || got[1].Object.Metadata.Name != "world" {
		t.Fatalf("events %+v, want hello then world added", got)
	}
	// From the first event's version: only what came after it.
	e.deploy("hello", "example.test/hello:v2")
	got = e.watchLines("/v1/namespaces/default/functions?watch=true&resourceVersion="+got[0].ResourceVersion, 2)
	if got[0].Object.Metadata.Name != "world" || got[1].Type != api.EventModified || got[1].Object.Spec.Image != "example.test/hello:v2" {
		t.Errorf("resumed events %+v, want world added, then hello modified", got)
	}
}

func TestWatchFromACompactedVersionIsGone(t *testing.T) {
	e := newEnv(t)
	first := e.deploy("hello", "example.test/hello:v1")
	last := e.deploy("hello", "example.test/hello:v2")
	rev, _ := strconv.ParseInt(last.Metadata.ResourceVersion, 10, 64)
	if _, err := e.etcd.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	before, _ := strconv.ParseInt(first.Metadata.ResourceVersion, 10, 64)
	a := e.do("GET", "/v1/namespaces/default/functions?watch=true&resourceVersion="+strconv.FormatInt(before-1, 10), e.admin, "")
	gone := a.err
	if a.code == http.StatusOK {
		// The stream began before etcd said: its one event is the error.
		var ev api.WatchEvent[*api.Function]
		if err := json.Unmarshal(a.body, &ev); err != nil || ev.Type != api.EventError || ev.Error == nil {
			t.Fatalf("watch from a compacted version: 200 %s, want an ERROR event", a.body)
		}
		gone = *ev.Error
	}
	if gone.Code != http.StatusGone || gone.Reason != api.ReasonGone || !strings.Contains(gone.Message, "list again") {
		t.Errorf("watch from a compacted version: %+v, want 410 telling to list again", gone)
	}

	// The admin token was written before the compaction too: a watch from a
	// kept version still streams (its token is vouched for again, not
	// taken for revoked).
	e.deploy("hello", "example.test/hello:v3")
	got := e.watchLines("/v1/namespaces/default/functions?watch=true&resourceVersion="+last.Metadata.ResourceVersion, 1)
	if got[0].Type != api.EventModified || got[0].Object.Spec.Image != "example.test/hello:v3" {
		t.Errorf("watch after a compaction: %+v, want hello modified to v3", got)
	}
}

func TestActivate(t *testing.T) {
	e := newEnv(t)
	e.deploy("hello", "example.test/hello:v1")
	ctx := context.Background()
	if _, err := store.SetScaleReplicas(ctx, e.store, api.Key{Namespace: "default", Name: "hello-00001"}, 1, 0); err != nil {
		t.Fatal(err)
	}
	activate := func(body string) apiserver.ActivateResponse {
		t.Helper()
		a := e.do("POST", "/v1/namespaces/default/scales/hello-00001/activate", e.admin, body)
		var out apiserver.ActivateResponse
		if err := json.Unmarshal(a.body, &out); err != nil || a.code != http.StatusOK {
			t.Fatalf("activate %s: %d %s", body, a.code, a.body)
		}
		return out
	}
	// No body: one request, as gateways before demands asked.
	if got, want := activate(""), (apiserver.ActivateResponse{Revision: "hello-00001", Replicas: 1, Activated: true}); got != want {
		t.Errorf("first activation %+v, want %+v", got, want)
	}
	if got, want := activate(`{"demand":1}`), (apiserver.ActivateResponse{Revision: "hello-00001", Replicas: 1}); got != want {
		t.Errorf("second activation %+v, want %+v (nothing raised)", got, want)
	}
	// The queue grew: the scale rises to what the autoscaler says 500 need.
	if got, want := activate(`{"demand":500}`), (apiserver.ActivateResponse{Revision: "hello-00001", Replicas: 5}); got != want {
		t.Errorf("activation for 500 %+v, want %+v", got, want)
	}
	// Less is never lowered to.
	if got, want := activate(`{"demand":120}`), (apiserver.ActivateResponse{Revision: "hello-00001", Replicas: 5}); got != want {
		t.Errorf("activation for 120 %+v, want %+v (nothing lowered)", got, want)
	}
	e.mu.Lock()
	if diff := cmp.Diff([]string{"hello-00001 1", "hello-00001 1", "hello-00001 500", "hello-00001 120"}, e.activated); diff != "" {
		t.Errorf("OnActivate calls (-want +got):\n%s", diff)
	}
	e.mu.Unlock()
	for _, body := range []string{`{"demand":-1}`, `{"demand":"many"}`, `[`} {
		if a := e.do("POST", "/v1/namespaces/default/scales/hello-00001/activate", e.admin, body); a.code != http.StatusBadRequest {
			t.Errorf("activate with %s: %d, want 400", body, a.code)
		}
	}
	if a := e.do("POST", "/v1/namespaces/default/scales/nope-00001/activate", e.admin, ""); a.code != http.StatusNotFound {
		t.Errorf("activate a missing revision: %d, want 404", a.code)
	}
}

func TestTokenRoutes(t *testing.T) {
	e := newEnv(t)
	a := e.do("POST", "/v1/tokens", e.admin, `{"role":"viewer","description":"ci"}`)
	var created apiserver.TokenResponse
	if err := json.Unmarshal(a.body, &created); err != nil || a.code != http.StatusCreated || created.Secret == "" || created.Role != "viewer" {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/v1/version", created.Secret, ""); a.code != http.StatusOK {
		t.Errorf("the new token does not work: %d", a.code)
	}
	a = e.do("GET", "/v1/tokens", e.admin, "")
	if strings.Contains(string(a.body), created.Secret) || strings.Contains(string(a.body), `"hash"`) {
		t.Errorf("the token list shows secrets or hashes: %s", a.body)
	}
	var l api.List[auth.Token]
	if err := json.Unmarshal(a.body, &l); err != nil || len(l.Items) != 2 {
		t.Errorf("tokens: %s, want the admin's and the new one", a.body)
	}
	if a := e.do("DELETE", "/v1/tokens/"+created.ID, e.admin, ""); a.code != http.StatusOK {
		t.Errorf("revoke: %d", a.code)
	}
	if a := e.do("DELETE", "/v1/tokens/"+created.ID, e.admin, ""); a.code != http.StatusNotFound {
		t.Errorf("revoke again: %d, want 404", a.code)
	}
}

func TestRequestsAreCounted(t *testing.T) {
	e := newEnv(t)
	e.do("GET", "/v1/namespaces/default/functions", e.admin, "")
	e.do("GET", "/v1/namespaces/default/functions", "", "")
	body := string(e.do("GET", "/metrics", e.admin, "").body)
	for _, want := range []string{
		`surge_apiserver_requests_total{code="200",method="GET",resource="functions"} 1`,
		`surge_apiserver_requests_total{code="401",method="GET",resource="functions"} 1`,
		`surge_apiserver_request_duration_seconds_count{method="GET",resource="functions"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}
