package apiserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// stream is a request whose answer is read line by line (a watch).
type stream struct {
	t      *testing.T
	code   int
	lines  *bufio.Scanner
	body   io.ReadCloser
	cancel context.CancelFunc
}

// open starts a GET on the server at base and returns its stream, which
// the test's end closes. The minute is a bound on a broken test, not a
// timing the test measures.
func (e *env) open(c *http.Client, base, path, token string) *stream {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("GET %s: %v", path, err)
	}
	s := &stream{t: e.t, code: resp.StatusCode, lines: bufio.NewScanner(resp.Body), body: resp.Body, cancel: cancel}
	e.t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	s.body.Close()
}

// until reads lines until one contains want, and returns the lines read.
func (s *stream) until(want string) string {
	s.t.Helper()
	var b strings.Builder
	for s.lines.Scan() {
		b.WriteString(s.lines.Text() + "\n")
		if strings.Contains(s.lines.Text(), want) {
			return b.String()
		}
	}
	s.t.Fatalf("stream ended (%v) before a line with %q:\n%s", s.lines.Err(), want, b.String())
	return ""
}

// ended reads the stream to its end and reports whether the server ended
// it (rather than the test's bound).
func (s *stream) ended() bool {
	for s.lines.Scan() {
	}
	return s.lines.Err() == nil
}

// listVersion is the resourceVersion of a list, to watch from.
func (e *env) listVersion(path string) string {
	e.t.Helper()
	var l struct {
		ResourceVersion string `json:"resourceVersion"`
	}
	if err := json.Unmarshal(e.do("GET", path, e.admin, "").body, &l); err != nil {
		e.t.Fatal(err)
	}
	return l.ResourceVersion
}

// TestEnvValuesAreForAdminsAndTheirNodes: a function's environment values
// (and so its revisions') are shown to admins and to the node that runs a
// replica of it; viewers and gateways get the names and "(redacted)", in
// gets, lists and watches, in one namespace and in all.
func TestEnvValuesAreForAdminsAndTheirNodes(t *testing.T) {
	e := newEnv(t)
	const secret = "s3cret-db-password"
	fv := e.listVersion("/v1/namespaces/default/functions")
	rv := e.listVersion("/v1/namespaces/default/revisions")
	if a := e.do("PUT", "/v1/namespaces/default/functions/hello", e.admin,
		`{"spec":{"image":"example.test/hello:v1","env":[{"name":"DB_PASSWORD","value":"`+secret+`"},{"name":"EMPTY","value":""}]}}`); a.code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", a.code, a.body)
	}
	reads := []string{
		"/v1/namespaces/default/functions/hello",
		"/v1/namespaces/default/functions",
		"/v1/functions",
		"/v1/namespaces/default/revisions/hello-00001",
		"/v1/namespaces/default/revisions",
		"/v1/revisions",
		"/v1/namespaces/default/revisions?function=hello",
	}
	watches := []string{
		"/v1/namespaces/default/functions?watch=true&resourceVersion=" + fv,
		"/v1/functions?watch=true&resourceVersion=" + fv,
		"/v1/namespaces/default/revisions?watch=true&resourceVersion=" + rv,
		"/v1/revisions?watch=true&resourceVersion=" + rv,
	}
	for _, role := range []auth.Role{auth.RoleViewer, auth.RoleGateway} {
		tok := e.token(role)
		for _, p := range reads {
			a := e.do("GET", p, tok, "")
			if a.code != http.StatusOK || strings.Contains(string(a.body), secret) || !strings.Contains(string(a.body), `"DB_PASSWORD","value":"(redacted)"`) {
				t.Errorf("%s reads %s: %d %s; want 200 with the value redacted", role, p, a.code, a.body)
			}
		}
		for _, p := range watches {
			s := e.open(e.http, e.url, p, tok)
			got := s.until("DB_PASSWORD")
			if s.code != http.StatusOK || strings.Contains(got, secret) || !strings.Contains(got, api.EventAdded) || !strings.Contains(got, "(redacted)") {
				t.Errorf("%s watches %s: %d %s; want the ADDED event with the value redacted", role, p, s.code, got)
			}
			s.close()
		}
	}
	for _, p := range reads {
		if a := e.do("GET", p, e.admin, ""); !strings.Contains(string(a.body), secret) {
			t.Errorf("the admin reads %s without the value: %d %s", p, a.code, a.body)
		}
	}

	// The node of a replica of the revision reads it whole; it reads no
	// function at all.
	node := e.join(e.token(auth.RoleNode), "node-a", "127.0.0.1")
	if r := e.doWith(node, "POST", "/v1/nodes", "", `{"metadata":{"name":"node-a"},"status":{"address":"127.0.0.1","agentURL":"https://127.0.0.1:7073"}}`, "application/json"); r.code != http.StatusCreated {
		t.Fatalf("node-a registers: %d %s", r.code, r.body)
	}
	if a := e.do("POST", "/v1/namespaces/default/replicas", e.admin,
		`{"metadata":{"name":"hello-00001-aaaaa"},"spec":{"function":"hello","revision":"hello-00001","nodeName":"node-a"}}`); a.code != http.StatusCreated {
		t.Fatalf("replica: %d %s", a.code, a.body)
	}
	if a := e.doWith(node, "GET", "/v1/namespaces/default/revisions/hello-00001", "", "", ""); a.code != http.StatusOK || !strings.Contains(string(a.body), secret) {
		t.Errorf("the replica's node reads its revision: %d %s, want it whole", a.code, a.body)
	}
	if a := e.doWith(node, "GET", "/v1/namespaces/default/functions/hello", "", "", ""); a.code != http.StatusForbidden {
		t.Errorf("a node reads a function: %d %s, want 403", a.code, a.body)
	}
}

// second is another API server on the env's etcd, as another server of
// the cluster; it answers at the returned URL.
func (e *env) second() string {
	e.t.Helper()
	h, err := apiserver.New(apiserver.Config{
		Store: store.New(e.etcd, e.clk), Tokens: auth.NewStore(e.etcd, e.clk), Version: "v-test", Clock: e.clk,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	e.t.Cleanup(srv.Close)
	return srv.URL
}

// TestRevokedTokenIsRefusedEverywhere: once a token is revoked, through
// one server, every server refuses it at its next request, and the watches
// it holds open on any server end.
func TestRevokedTokenIsRefusedEverywhere(t *testing.T) {
	e := newEnv(t)
	other := e.second()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	t.Cleanup(client.CloseIdleConnections)
	viewer := e.token(auth.RoleViewer)
	keep := e.token(auth.RoleViewer)
	get := func(base, tok string) int {
		req, _ := http.NewRequest("GET", base+"/v1/namespaces/default/functions", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, base := range []string{e.url, other} {
		if code := get(base, viewer); code != http.StatusOK {
			t.Fatalf("the viewer before revocation at %s: %d", base, code)
		}
	}
	here := e.open(client, e.url, "/v1/namespaces/default/functions?watch=true", viewer)
	there := e.open(client, other, "/v1/namespaces/default/functions?watch=true", viewer)
	kept := e.open(client, other, "/v1/namespaces/default/functions?watch=true", keep)
	if here.code != http.StatusOK || there.code != http.StatusOK || kept.code != http.StatusOK {
		t.Fatalf("watches: %d %d %d", here.code, there.code, kept.code)
	}

	id, _, _ := strings.Cut(viewer, ".")
	if a := e.do("DELETE", "/v1/tokens/"+id, e.admin, ""); a.code != http.StatusOK {
		t.Fatalf("revoke: %d %s", a.code, a.body)
	}
	for _, base := range []string{e.url, other} {
		if code := get(base, viewer); code != http.StatusUnauthorized {
			t.Errorf("the revoked token at %s: %d, want 401", base, code)
		}
	}
	if !here.ended() || !there.ended() {
		t.Error("a watch of the revoked token went on")
	}
	// Another token's watch goes on: a deploy still reaches it.
	e.deploy("hello", "example.test/hello:v1")
	kept.until(`"hello"`)
}

// TestLastAdminTokenStays: the only admin token cannot be revoked, so
// that someone can always make tokens; with a second one it can.
func TestLastAdminTokenStays(t *testing.T) {
	e := newEnv(t)
	id, _, _ := strings.Cut(e.admin, ".")
	a := e.do("DELETE", "/v1/tokens/"+id, e.admin, "")
	if a.code != http.StatusConflict || !strings.Contains(a.err.Message, "last admin token") {
		t.Errorf("revoke the last admin token: %d %s, want 409", a.code, a.body)
	}
	second := e.token(auth.RoleAdmin)
	if a := e.do("DELETE", "/v1/tokens/"+id, second, ""); a.code != http.StatusOK {
		t.Errorf("revoke the first of two admin tokens: %d %s", a.code, a.body)
	}
	if a := e.do("GET", "/v1/version", e.admin, ""); a.code != http.StatusUnauthorized {
		t.Errorf("the revoked admin token: %d, want 401", a.code)
	}
}

// TestQuotas: each limit is refused with a 4xx whose body names it.
func TestQuotas(t *testing.T) {
	e := newEnv(t, func(c *apiserver.Config) { c.Limits.MaxWatchesPerPrincipal = 2 })
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		field, limit             string
	}{
		{"minScale", "PUT", "/v1/namespaces/default/functions/big", `{"spec":{"image":"x","scaling":{"minScale":101}}}`,
			422, "spec.scaling.minScale", "MaxMinScale"},
		{"maxScale", "PUT", "/v1/namespaces/default/functions/big", `{"spec":{"image":"x","scaling":{"maxScale":1001}}}`,
			422, "spec.scaling.maxScale", "MaxReplicas"},
		{"scale replicas", "PUT", "/v1/namespaces/default/scales/hello-00001", `{"spec":{"replicas":1001}}`,
			422, "spec.replicas", "MaxReplicas"},
	} {
		a := e.do(tc.method, tc.path, e.admin, tc.body)
		if a.code != tc.code || a.err.Field != tc.field || !strings.Contains(a.err.Message, tc.limit) {
			t.Errorf("%s: %d %s, want %d naming %s and %s", tc.name, a.code, a.body, tc.code, tc.field, tc.limit)
		}
	}
	if a := e.do("PUT", "/v1/namespaces/default/functions/big", e.admin, `{"spec":{"image":"x","scaling":{"minScale":100,"maxScale":1000}}}`); a.code != http.StatusCreated {
		t.Errorf("a function at the limits: %d %s", a.code, a.body)
	}

	viewer := e.token(auth.RoleViewer)
	w1 := e.open(e.http, e.url, "/v1/namespaces/default/functions?watch=true", viewer)
	e.open(e.http, e.url, "/v1/nodes?watch=true", viewer)
	third := e.open(e.http, e.url, "/v1/replicas?watch=true", viewer)
	b, _ := io.ReadAll(third.body)
	var ae api.Error
	_ = json.Unmarshal(b, &ae)
	if third.code != http.StatusTooManyRequests || ae.Reason != apiserver.ReasonTooManyWatches || !strings.Contains(ae.Message, "MaxWatchesPerPrincipal") {
		t.Errorf("a third watch: %d %s, want 429 naming MaxWatchesPerPrincipal", third.code, b)
	}
	if s := e.open(e.http, e.url, "/v1/replicas?watch=true", e.admin); s.code != http.StatusOK {
		t.Errorf("another token's watch: %d, want 200", s.code)
	}
	// A watch closed gives its place back, once the server has seen it go.
	w1.close()
	deadline := time.Now().Add(time.Minute)
	for {
		s := e.open(e.http, e.url, "/v1/replicas?watch=true", viewer)
		if s.code == http.StatusOK {
			break
		}
		s.close()
		if time.Now().After(deadline) {
			t.Fatal("a closed watch never gave its place back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
