package client_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient returns a client of srv, and closes its idle connections
// when the test ends.
func newClient(t *testing.T, srv *httptest.Server, token string) *client.Client {
	t.Helper()
	cfg := &client.Config{Server: srv.URL, Token: token}
	if srv.TLS != nil {
		cfg.CertificateAuthority = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Transport().(*http.Transport).CloseIdleConnections() })
	return c
}

func TestNewChecksTheConfig(t *testing.T) {
	for _, cfg := range []client.Config{
		{Server: "127.0.0.1:7070"},
		{Server: "ftp://127.0.0.1"},
		{Server: "https://"},
		{Server: "https://127.0.0.1:7070", CertificateAuthority: "not PEM"},
	} {
		if _, err := client.New(&cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
	c, err := client.New(&client.Config{Server: "https://127.0.0.1:7070/", Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server() != "https://127.0.0.1:7070" || c.Namespace() != api.DefaultNamespace || c.Token() != "t" {
		t.Errorf("client of %q in %q with %q: want the URL without its slash, the default namespace", c.Server(), c.Namespace(), c.Token())
	}
	if w := c.WithToken("other"); w.Token() != "other" || c.Token() != "t" {
		t.Errorf("WithToken changed the original or did not take: %q, %q", w.Token(), c.Token())
	}
}

func TestDoSendsAndDecodes(t *testing.T) {
	var got struct {
		method, path, auth, contentType string
		body                            map[string]any
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.auth, got.contentType = r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"metadata":{"name":"hello"},"spec":{"image":"example.test/hello:v1"}}`)
	}))
	defer srv.Close()
	c := newClient(t, srv, "secret")

	f, err := c.PutFunction(context.Background(), &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.method != "PUT" || got.path != "/v1/namespaces/default/functions/hello" || got.auth != "Bearer secret" || got.contentType != "application/json" {
		t.Errorf("request %s %s auth %q type %q", got.method, got.path, got.auth, got.contentType)
	}
	if got.body["spec"].(map[string]any)["image"] != "example.test/hello:v1" {
		t.Errorf("body %v", got.body)
	}
	if f.Metadata.Name != "hello" || f.Spec.Image != "example.test/hello:v1" {
		t.Errorf("decoded %+v", f)
	}
	// No body: no content type; no output wanted: the answer is drained.
	if err := client.Delete[api.Node](context.Background(), c, api.Key{Name: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if got.method != "DELETE" || got.path != "/v1/nodes/node-a" || got.contentType != "" {
		t.Errorf("request %s %s type %q", got.method, got.path, got.contentType)
	}
}

func TestErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/namespaces/default/functions/missing":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":404,"reason":"NotFound","error":"function \"missing\" not found"}`)
		case "/v1/namespaces/default/functions/invalid":
			w.WriteHeader(http.StatusUnprocessableEntity)
			io.WriteString(w, `{"code":422,"reason":"Invalid","error":"must be 1 to 65535","field":"spec.port"}`)
		case "/v1/namespaces/default/functions/stale":
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"code":409,"reason":"Conflict","error":"changed since you read it"}`)
		case "/proxy":
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "upstream is down\n")
		case "/empty":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/not-json":
			io.WriteString(w, "<html>")
		}
	}))
	defer srv.Close()
	c := newClient(t, srv, "")
	ctx := context.Background()
	for _, tc := range []struct {
		path    string
		is      error
		code    int
		message string
	}{
		{client.ObjectPath[api.Function](api.Key{Namespace: "default", Name: "missing"}), api.ErrNotFound, 404, `function "missing" not found`},
		{client.ObjectPath[api.Function](api.Key{Namespace: "default", Name: "invalid"}), api.ErrInvalid, 422, "spec.port: must be 1 to 65535"},
		{client.ObjectPath[api.Function](api.Key{Namespace: "default", Name: "stale"}), api.ErrConflict, 409, "changed since you read it"},
		{"/proxy", nil, 502, "upstream is down"},
		{"/empty", nil, 503, "Service Unavailable"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := c.Do(ctx, "GET", tc.path, nil, &struct{}{})
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || err.Error() != tc.message {
				t.Fatalf("err %v (%T), want an *api.Error %d %q", err, err, tc.code, tc.message)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
	if err := c.Do(ctx, "GET", "/not-json", nil, &struct{}{}); err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("a 200 that is not JSON: %v, want a decode error", err)
	}

	// Nobody listens: ErrUnreachable, naming the server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	down, err := client.New(&client.Config{Server: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Do(ctx, "GET", "/v1/version", nil, nil); !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Errorf("nobody listening: %v, want ErrUnreachable naming %s", err, addr)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := down.Do(cancelled, "GET", "/v1/version", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("an ended context: %v, want context.Canceled", err)
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		kind api.Kind
		key  api.Key
		want string
	}{
		{api.FunctionKind, api.Key{}, "/v1/functions"},
		{api.FunctionKind, api.Key{Namespace: "default"}, "/v1/namespaces/default/functions"},
		{api.FunctionKind, api.Key{Namespace: "default", Name: "a/b"}, "/v1/namespaces/default/functions/a%2Fb"},
		{api.TrafficKind, api.Key{Namespace: "team", Name: "hello"}, "/v1/namespaces/team/traffic/hello"},
		{api.ScaleKind, api.Key{Namespace: "default", Name: "hello-00001"}, "/v1/namespaces/default/scales/hello-00001"},
		{api.NodeKind, api.Key{Name: "node-a"}, "/v1/nodes/node-a"},
		{api.NodeKind, api.Key{Namespace: "default", Name: "node-a"}, "/v1/nodes/node-a"},
		{api.NodeKind, api.Key{}, "/v1/nodes"},
	} {
		if got := client.PathOf(tc.kind, tc.key); got != tc.want {
			t.Errorf("PathOf(%s, %+v) = %q, want %q", tc.kind.Plural, tc.key, got, tc.want)
		}
	}
	key := api.Key{Namespace: "default", Name: "hello-00001-abcde"}
	if got, want := client.ObjectPath[api.Replica](key)+"/status", "/v1/namespaces/default/replicas/hello-00001-abcde/status"; got != want {
		t.Errorf("ObjectPath[api.Replica] = %q, want %q", got, want)
	}
	if got, want := client.CollectionPath[api.Revision](""), "/v1/revisions"; got != want {
		t.Errorf("CollectionPath[api.Revision] = %q, want %q", got, want)
	}
}

// watchServer serves watches of functions from a list of events: each
// connection sends the events after the resourceVersion it asks for, up
// to cut of them, and then breaks, as a restarting server does.
type watchServer struct {
	mu     sync.Mutex
	events []api.WatchEvent[*api.Function]
	cut    int
	asked  []string // each connection's resourceVersion
	// then is sent after the events when set (an ERROR event, say).
	then string
}

func (s *watchServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("watch") != "true" || r.URL.Query().Get("function") != "hello" {
		http.Error(w, "want ?watch=true&function=hello", http.StatusBadRequest)
		return
	}
	rv := r.URL.Query().Get("resourceVersion")
	s.mu.Lock()
	s.asked = append(s.asked, rv)
	var send []api.WatchEvent[*api.Function]
	for _, e := range s.events {
		if rv == "" || e.ResourceVersion > rv {
			send = append(send, e)
		}
	}
	send = send[:min(len(send), s.cut)]
	then := s.then
	s.mu.Unlock()
	enc := json.NewEncoder(w)
	for _, e := range send {
		_ = enc.Encode(e)
	}
	if then != "" && len(send) < s.cut {
		io.WriteString(w, then+"\n")
	}
	// Returning breaks the stream: the client reconnects.
}

func event(typ, rv, image string) api.WatchEvent[*api.Function] {
	return api.WatchEvent[*api.Function]{Type: typ, ResourceVersion: rv,
		Object: &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: image}}}
}

func TestWatchReconnectsFromTheLastVersion(t *testing.T) {
	ws := &watchServer{cut: 2, events: []api.WatchEvent[*api.Function]{
		event(api.EventAdded, "11", "v1"),
		{Type: api.EventBookmark, ResourceVersion: "12"},
		event(api.EventModified, "13", "v2"),
		event(api.EventModified, "14", "v3"),
		event(api.EventDeleted, "15", "v3"),
	}}
	srv := httptest.NewServer(ws)
	defer srv.Close()
	c := newClient(t, srv, "")

	var got []string
	errDone := errors.New("seen enough")
	err := client.Watch[api.Function](context.Background(), c, "default",
		client.WatchOptions{ResourceVersion: "10", Query: url.Values{"function": {"hello"}}, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond},
		func(e api.WatchEvent[*api.Function]) error {
			got = append(got, e.Type+" "+e.Object.Spec.Image)
			if e.Type == api.EventDeleted {
				return errDone
			}
			return nil
		})
	if !errors.Is(err, errDone) {
		t.Fatalf("Watch = %v, want the callback's error", err)
	}
	if diff := cmp.Diff([]string{"ADDED v1", "MODIFIED v2", "MODIFIED v3", "DELETED v3"}, got); diff != "" {
		t.Errorf("events (-want +got), each once, in order, bookmarks left out:\n%s", diff)
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	// Two events a connection: it resumed after the bookmark, then after v2.
	if diff := cmp.Diff([]string{"10", "12", "14"}, ws.asked); diff != "" {
		t.Errorf("resourceVersions asked (-want +got):\n%s", diff)
	}
}

func TestWatchStopsWhenResumingCannotHelp(t *testing.T) {
	for _, tc := range []struct {
		name string
		then string
		is   error
	}{
		{"gone", `{"type":"ERROR","error":{"code":410,"reason":"Gone","error":"list again"}}`, api.ErrGone},
		{"forbidden", `{"type":"ERROR","error":{"code":403,"reason":"Forbidden","error":"no"}}`, api.ErrForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := &watchServer{cut: 10, events: []api.WatchEvent[*api.Function]{event(api.EventAdded, "11", "v1")}, then: tc.then}
			srv := httptest.NewServer(ws)
			defer srv.Close()
			c := newClient(t, srv, "")
			n := 0
			err := client.Watch[api.Function](context.Background(), c, "default",
				client.WatchOptions{Query: url.Values{"function": {"hello"}}, RetryDelay: time.Millisecond},
				func(api.WatchEvent[*api.Function]) error { n++; return nil })
			if !errors.Is(err, tc.is) || n != 1 {
				t.Errorf("Watch = %v after %d events, want %v after 1", err, n, tc.is)
			}
		})
	}
	// An answer that is not a stream, such as a 401, ends it too.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"code":401,"reason":"Unauthorized","error":"invalid or revoked token"}`)
	}))
	defer srv.Close()
	err := client.Watch[api.Function](context.Background(), newClient(t, srv, "x"), "default", client.WatchOptions{},
		func(api.WatchEvent[*api.Function]) error { return nil })
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("Watch = %v, want unauthorized", err)
	}
}

func TestWatchRetriesAnUnavailableServerUntilCancelled(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		if calls == 3 {
			cancel() // the caller gives up while the server is still away
		}
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"code":503,"reason":"ServiceUnavailable","error":"etcd unreachable"}`)
	}))
	defer srv.Close()
	err := client.Watch[api.Function](ctx, newClient(t, srv, ""), "default",
		client.WatchOptions{RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond},
		func(api.WatchEvent[*api.Function]) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch = %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls < 3 {
		t.Errorf("%d attempts, want it to retry a 503", calls)
	}
}

func TestOpenStreams(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"code":401,"reason":"Unauthorized","error":"no"}`)
			return
		}
		for i := range 3 {
			fmt.Fprintf(w, "line %d\n", i)
		}
	}))
	defer srv.Close()
	body, err := newClient(t, srv, "t").Open(context.Background(), "/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var lines []string
	for sc := bufio.NewScanner(body); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	if diff := cmp.Diff([]string{"line 0", "line 1", "line 2"}, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if _, err := newClient(t, srv, "wrong").Open(context.Background(), "/logs"); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("Open with a wrong token: %v, want unauthorized", err)
	}
	// Open goes to the API's origin only: the token goes nowhere else.
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request reached another origin, with %q", r.Header.Get("Authorization"))
	}))
	defer elsewhere.Close()
	if _, err := newClient(t, srv, "t").Open(context.Background(), elsewhere.URL+"/logs"); err == nil {
		t.Errorf("Open(%q) = nil error, want it refused", elsewhere.URL+"/logs")
	}
	// A path that looks like a network path is still a path of the API.
	if body, err := newClient(t, srv, "t").Open(context.Background(), "//"+strings.TrimPrefix(elsewhere.URL, "http://")+"/logs"); err == nil {
		body.Close()
	}
}

// TestCloseConnections: a client with a certificate closes its busy
// connections too, so that a renewed certificate is used at once.
func TestCloseConnections(t *testing.T) {
	started := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	cfg := &client.Config{Server: srv.URL, CertificateAuthority: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))}
	c, err := client.NewWithCertificate(cfg, func() *tls.Certificate { return nil })
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.Open(context.Background(), "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	<-started
	c.CloseConnections()
	if _, err := io.ReadAll(body); err == nil {
		t.Error("a stream outlived CloseConnections")
	}
}

func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if _, err := client.LoadConfig(path); !errors.Is(err, client.ErrNoConfig) {
		t.Errorf("a missing file: %v, want ErrNoConfig", err)
	}
	want := &client.Config{Server: "https://127.0.0.1:7070", CertificateAuthority: "PEM", Token: "id.secret", Namespace: "team"}
	b, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := client.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := os.WriteFile(path, []byte("server: x\ntokne: y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "tokne") {
		t.Errorf("a misspelt field: %v, want an error naming it", err)
	}
	t.Setenv(client.ConfigEnv, path)
	if got := client.DefaultConfigPath(); got != path {
		t.Errorf("DefaultConfigPath = %q, want $%s", got, client.ConfigEnv)
	}
}
