package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/store"
)

// route is one API route, with a body to send where it takes one.
type route struct {
	method, path string
	body         string
	// write routes are forbidden to the viewer role.
	write bool
}

var routes = []route{
	{"GET", "/metrics", "", false},
	{"GET", "/v1/version", "", false},
	{"GET", "/v1/functions", "", false},
	{"GET", "/v1/namespaces/default/functions", "", false},
	{"GET", "/v1/namespaces/default/functions?watch=true", "", false},
	{"GET", "/v1/namespaces/default/functions/hello", "", false},
	{"POST", "/v1/namespaces/default/functions", `{"metadata":{"name":"x"},"spec":{"image":"example.test/x:v1"}}`, true},
	{"PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"example.test/x:v1"}}`, true},
	{"DELETE", "/v1/namespaces/default/functions/hello", "", true},
	{"GET", "/v1/revisions", "", false},
	{"GET", "/v1/namespaces/default/revisions", "", false},
	{"GET", "/v1/namespaces/default/revisions/hello-00001", "", false},
	{"GET", "/v1/traffic", "", false},
	{"GET", "/v1/namespaces/default/traffic/hello", "", false},
	{"PUT", "/v1/namespaces/default/traffic/hello", `{"spec":{"targets":[{"revision":"hello-00001","percent":100}]}}`, true},
	{"GET", "/v1/scales", "", false},
	{"GET", "/v1/namespaces/default/scales/hello-00001", "", false},
	{"PUT", "/v1/namespaces/default/scales/hello-00001", `{"spec":{"replicas":2}}`, true},
	{"GET", "/v1/replicas", "", false},
	{"GET", "/v1/namespaces/default/replicas", "", false},
	{"GET", "/v1/namespaces/default/replicas/hello-00001-abcde", "", false},
	{"POST", "/v1/namespaces/default/replicas", `{"metadata":{"name":"hello-00001-abcde"},"spec":{"function":"hello","revision":"hello-00001"}}`, true},
	{"PUT", "/v1/namespaces/default/replicas/hello-00001-abcde", `{"spec":{"function":"hello","revision":"hello-00001"}}`, true},
	{"DELETE", "/v1/namespaces/default/replicas/hello-00001-abcde", "", true},
	{"GET", "/v1/nodes", "", false},
	{"GET", "/v1/nodes/n1", "", false},
	{"POST", "/v1/nodes", `{"metadata":{"name":"n1"}}`, true},
	{"PUT", "/v1/nodes/n1", `{}`, true},
	{"DELETE", "/v1/nodes/n1", "", true},
	{"GET", "/v1/tokens", "", true},
	{"POST", "/v1/tokens", `{"role":"viewer"}`, true},
	{"DELETE", "/v1/tokens/0123456789ab", "", true},
	{"GET", "/v1/no-such-route", "", false},
}

type rawClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func newRawClient(t *testing.T, in *controlplanetest.Instance) *rawClient {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(in.AdminConfig().CertificateAuthority))
	return &rawClient{t: t, base: in.URL(), http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// do sends a request and returns the status and the decoded JSON error body.
func (c *rawClient) do(method, path, token, body string) (int, api.Error, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := c.http.Do(req.WithContext(ctx))
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e api.Error
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &e); err != nil {
			c.t.Errorf("%s %s: %d answer is not a JSON error: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, e, resp.Header
}

func createToken(t *testing.T, c *rawClient, admin, role string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", c.base+"/v1/tokens", bytes.NewReader([]byte(`{"role":"`+role+`"}`)))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr apiserver.TokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create %s token: %d %v", role, resp.StatusCode, err)
	}
	return tr.Secret
}

func TestEveryRouteNeedsAToken(t *testing.T) {
	in := controlplanetest.Start(t)
	c := newRawClient(t, in)
	admin := in.AdminConfig().Token
	viewer := createToken(t, c, admin, "viewer")
	node := createToken(t, c, admin, "node")
	id, _, _ := strings.Cut(admin, ".")

	for _, r := range routes {
		for _, tok := range []struct{ name, value string }{
			{"none", ""}, {"garbage", "not-a-token"}, {"wrong secret", id + ".AAAA"}, {"unknown id", "000000000000.secret"},
		} {
			code, e, _ := c.do(r.method, r.path, tok.value, r.body)
			if code != 401 || e.Reason != api.ReasonUnauthorized {
				t.Errorf("%s %s with token %s: %d %q, want 401", r.method, r.path, tok.name, code, e.Reason)
			}
		}
		code, e, _ := c.do(r.method, r.path, viewer, r.body)
		switch {
		case r.write && code != 403:
			t.Errorf("%s %s as viewer: %d, want 403", r.method, r.path, code)
		case r.write && !strings.Contains(e.Message, "viewer"):
			t.Errorf("%s %s as viewer: 403 message %q does not name the role", r.method, r.path, e.Message)
		case !r.write && (code == 401 || code == 403):
			t.Errorf("%s %s as viewer: %d, want it allowed", r.method, r.path, code)
		}
	}
	// The join token (a node-role token) may do nothing but obtain a
	// node's certificate: no route above, read or write.
	for _, r := range routes {
		if r.path == "/v1/no-such-route" {
			continue // 404 to every token
		}
		if code, e, _ := c.do(r.method, r.path, node, r.body); code != 403 || !strings.Contains(e.Message, "bootstrap") {
			t.Errorf("%s %s with the join token: %d %q, want 403 saying it only bootstraps", r.method, r.path, code, e.Message)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, _ := c.do("GET", p, "", ""); code != 200 {
			t.Errorf("GET %s without a token: %d, want 200", p, code)
		}
	}
	// A revoked token stops working at once.
	vid, _, _ := strings.Cut(viewer, ".")
	if code, _, _ := c.do("DELETE", "/v1/tokens/"+vid, admin, ""); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _, _ := c.do("GET", "/v1/functions", viewer, ""); code != 401 {
		t.Errorf("revoked token: %d, want 401", code)
	}
}

func TestBadRequestsAreRejectedAndWriteNothing(t *testing.T) {
	in := controlplanetest.Start(t)
	c := newRawClient(t, in)
	admin := in.AdminConfig().Token
	// What the API keeps: every key but the controllers' leader election.
	header := func() string {
		resp, err := in.Store().Client().Get(context.Background(), store.Prefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, kv := range resp.Kvs {
			if !strings.HasPrefix(string(kv.Key), store.Prefix+"leader/") {
				fmt.Fprintf(&b, "%s@%d ", kv.Key, kv.ModRevision)
			}
		}
		return b.String()
	}
	start := header()
	big := `{"metadata":{"name":"big"},"spec":{"image":"x","args":["` + strings.Repeat("a", apiserver.MaxBodyBytes) + `"]}}`
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		field                    string
	}{
		{"bad name", "POST", "/v1/namespaces/default/functions", `{"metadata":{"name":"Bad_Name"},"spec":{"image":"x"}}`, 422, "metadata.name"},
		{"bad port", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x","port":70000}}`, 422, "spec.port"},
		{"port not a number", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x","port":"80"}}`, 400, "spec.port"},
		{"unknown field", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x","replicas":3}}`, 400, "replicas"},
		{"no image", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{}}`, 422, "spec.image"},
		{"name mismatch", "PUT", "/v1/namespaces/default/functions/hello", `{"metadata":{"name":"other"},"spec":{"image":"x"}}`, 400, "metadata.name"},
		{"bad namespace", "PUT", "/v1/namespaces/Bad/functions/hello", `{"spec":{"image":"x"}}`, 422, "metadata.namespace"},
		{"not json", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":`, 400, ""},
		{"trailing data", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x"}} {}`, 400, ""},
		{"empty body", "PUT", "/v1/namespaces/default/functions/hello", ``, 400, ""},
		{"too large", "PUT", "/v1/namespaces/default/functions/big", big, 413, ""},
		{"min over max", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x","scaling":{"minScale":5,"maxScale":2}}}`, 422, "spec.scaling.minScale"},
		{"revision write", "POST", "/v1/namespaces/default/revisions", `{"metadata":{"name":"hello-00001"}}`, 405, ""},
		{"bad token role", "POST", "/v1/tokens", `{"role":"root"}`, 422, "role"},
		{"bad resourceVersion", "DELETE", "/v1/namespaces/default/functions/hello?resourceVersion=abc", ``, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, e, _ := c.do(tc.method, tc.path, admin, tc.body)
			if code != tc.code || e.Field != tc.field || e.Message == "" {
				t.Errorf("got %d field %q message %q, want %d field %q", code, e.Field, e.Message, tc.code, tc.field)
			}
		})
	}
	if got := header(); got != start {
		t.Errorf("rejected requests wrote to etcd:\nbefore %s\nafter  %s", start, got)
	}
}
