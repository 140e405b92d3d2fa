package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

func TestEndpoints(t *testing.T) {
	for _, tc := range []struct {
		cfg  client.Config
		want []string
	}{
		{client.Config{Server: "https://a:7070"}, []string{"https://a:7070"}},
		{client.Config{Server: "https://a:7070, https://b:7070,,https://a:7070"}, []string{"https://a:7070", "https://b:7070"}},
		{client.Config{Server: "https://a:7070", Servers: []string{"https://c:7070", "https://a:7070"}}, []string{"https://a:7070", "https://c:7070"}},
		{client.Config{}, nil},
	} {
		if diff := cmp.Diff(tc.want, tc.cfg.Endpoints()); diff != "" {
			t.Errorf("Endpoints of %+v (-want +got):\n%s", tc.cfg, diff)
		}
	}
	c := client.Config{Server: "https://a:7070,https://b:7070", Token: "t"}.WithEndpoints([]string{"https://b:7070", "https://a:7070"})
	if c.Server != "https://b:7070" || len(c.Servers) != 1 || c.Servers[0] != "https://a:7070" || c.Token != "t" {
		t.Errorf("WithEndpoints = %+v", c)
	}
}

// deadURL is the URL of a server that has stopped: nothing listens there.
func deadURL(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

// countingServer answers every request with code and body, counting them.
type countingServer struct {
	mu    sync.Mutex
	calls int
	code  int
	body  string
}

func (s *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(s.code)
	io.WriteString(w, s.body)
}

func (s *countingServer) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func multiClient(t *testing.T, urls ...string) *client.Client {
	t.Helper()
	c, err := client.New(&client.Config{Server: urls[0], Servers: urls[1:]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Transport().(*http.Transport).CloseIdleConnections() })
	return c
}

func TestFailsOverToTheNextServer(t *testing.T) {
	ok := &countingServer{code: http.StatusOK, body: `{"version":"v"}`}
	live := httptest.NewServer(ok)
	defer live.Close()
	dead := deadURL(t)
	c := multiClient(t, dead, live.URL)

	// Every method goes on when its connection was never made: the dead
	// server cannot have seen it.
	for _, m := range []string{"GET", "PUT", "POST", "DELETE"} {
		if err := c.Do(context.Background(), m, "/v1/version", nil, nil); err != nil {
			t.Errorf("%s with the first server down: %v", m, err)
		}
	}
	if c.Server() != live.URL {
		t.Errorf("server in use %q, want the one that answered, %q", c.Server(), live.URL)
	}
	if ok.n() != 4 {
		t.Errorf("the live server saw %d requests, want 4", ok.n())
	}
	if diff := cmp.Diff([]string{dead, live.URL}, c.Servers()); diff != "" {
		t.Errorf("Servers (-want +got):\n%s", diff)
	}

	// Every server down: the error says so.
	c = multiClient(t, dead, deadURL(t))
	if err := c.Do(context.Background(), "GET", "/v1/version", nil, nil); !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("every server down: %v, want ErrUnreachable", err)
	}
}

func TestUnavailableServer(t *testing.T) {
	unavailable := &countingServer{code: http.StatusServiceUnavailable, body: `{"code":503,"reason":"ServiceUnavailable","error":"etcd has no leader"}`}
	ok := &countingServer{code: http.StatusOK, body: `{}`}
	a, b := httptest.NewServer(unavailable), httptest.NewServer(ok)
	defer a.Close()
	defer b.Close()
	c := multiClient(t, a.URL, b.URL)

	// An idempotent request is answered by the next server.
	if err := c.Do(context.Background(), "PUT", "/v1/namespaces/default/functions/x", map[string]string{}, nil); err != nil {
		t.Errorf("PUT: %v", err)
	}
	// A POST is not sent twice: the first server may have done it.
	c = multiClient(t, a.URL, b.URL)
	err := c.Do(context.Background(), "POST", "/v1/tokens", map[string]string{}, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != http.StatusServiceUnavailable {
		t.Errorf("POST answered 503: %v, want the server's ErrUnavailable", err)
	}
	if unavailable.n() != 2 || ok.n() != 1 {
		t.Errorf("requests: %d to the unavailable server (want 2), %d to the other (want 1)", unavailable.n(), ok.n())
	}
}

// TestWatchResumesOnAnotherServer: a watch whose server goes away goes on
// from the last version it saw on the next server.
func TestWatchResumesOnAnotherServer(t *testing.T) {
	first := &watchServer{cut: 1, events: []api.WatchEvent[*api.Function]{event(api.EventAdded, "11", "v1")}}
	a := httptest.NewServer(first)
	second := &watchServer{cut: 10, events: []api.WatchEvent[*api.Function]{
		event(api.EventAdded, "11", "v1"), event(api.EventModified, "12", "v2"),
	}}
	b := httptest.NewServer(second)
	defer b.Close()
	c := multiClient(t, a.URL, b.URL)

	var got []string
	errDone := errors.New("seen enough")
	err := client.Watch[api.Function](context.Background(), c, "default",
		client.WatchOptions{Query: url.Values{"function": {"hello"}}, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond},
		func(e api.WatchEvent[*api.Function]) error {
			got = append(got, e.Type+" "+e.Object.Spec.Image)
			if len(got) == 1 {
				a.CloseClientConnections()
				a.Close() // the first server is gone for good
			}
			if len(got) == 2 {
				return errDone
			}
			return nil
		})
	if !errors.Is(err, errDone) {
		t.Fatalf("Watch = %v", err)
	}
	if diff := cmp.Diff([]string{"ADDED v1", "MODIFIED v2"}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	if len(second.asked) == 0 || second.asked[0] != "11" {
		t.Errorf("the second server was asked from %v, want from 11", second.asked)
	}
}
