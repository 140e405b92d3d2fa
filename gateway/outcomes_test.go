package gateway

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

// revisionOf finds a routed revision in the current snapshot.
func (tg *testGateway) revisionOf(t *testing.T, name string) *revision {
	t.Helper()
	for _, r := range tg.Routes().Load().revisions {
		if r.key.Name == name {
			return r
		}
	}
	t.Fatalf("revision %s is not routed", name)
	return nil
}

// TestOutcomesCountErrorsAndLatency checks what the gateway counts of each
// request's end for the canary analysis: 5xx answers, the gateway's own
// included, and answers broken off mid-body are errors; the latency runs
// from the request's arrival to the answer's header (for a streamed body)
// or to its end. The replica moves the gateway's fake clock to take time.
func TestOutcomesCountErrorsAndLatency(t *testing.T) {
	clk := newFakeClock()
	tg := startGateway(t, testConfig(), Deps{Clock: clk})
	headerSeen := make(chan struct{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/slow":
			clk.Advance(300 * time.Millisecond)
			fmt.Fprint(w, "slow")
		case "/stream":
			clk.Advance(50 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-headerSeen
			clk.Advance(10 * time.Second) // the body's time is not latency
			fmt.Fprint(w, "done")
		case "/broken":
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, "part")
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case "/missing":
			http.NotFound(w, r)
		default:
			fmt.Fprint(w, "ok")
		}
	}))
	tg.route("down", "down-00001", 0, 0, closedAddr(t))

	// A new connection each: net/http sends a GET again when a reused
	// connection breaks before the answer (as /broken's does).
	oneShot := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, p := range []string{"/", "/", "/fail", "/slow", "/stream", "/broken", "/missing"} {
		req, err := http.NewRequest("GET", "http://"+tg.addr+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "hello.surge.localhost"
		resp, err := oneShot.Do(req)
		if p == "/stream" {
			close(headerSeen) // the client has the header: the gateway timed it
		}
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	tg.do(t, "GET", "down.surge.localhost", "/", nil, nil) // 502 by the gateway

	// Errors: /fail and /broken. Latency: none on the fake clock for "/"
	// twice, /fail, /broken (its header came at once) and /missing.
	want := api.Outcomes{Requests: 7, Errors: 2, Latency: make([]int64, api.LatencyBucket(300*time.Millisecond)+1)}
	want.Latency[0] = 5
	want.Latency[api.LatencyBucket(50*time.Millisecond)]++
	want.Latency[api.LatencyBucket(300*time.Millisecond)]++
	eventually(t, "7 requests counted", func() bool { return tg.revisionOf(t, "hello-00001").outcomes.requests.Load() == 7 })
	got := tg.revisionOf(t, "hello-00001").outcomes.snapshot()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes of hello-00001 (-want +got):\n%s", diff)
	}
	if got := tg.revisionOf(t, "down-00001").outcomes.snapshot(); got.Requests != 1 || got.Errors != 1 {
		t.Errorf("outcomes of a revision the gateway answered 502 for: %+v, want 1 request, 1 error", got)
	}

	// The stats carry them, cumulatively, and only for revisions that had
	// a request.
	tg.route("idle", "idle-00001", 0, 0, closedAddr(t))
	c := newStatsCollector(tg.epoch)
	var st []RevisionStats
	for range 2 {
		st = c.collect(clk.Now(), tg.Routes().Load().revisions)
	}
	for _, s := range st {
		switch s.Revision {
		case "hello-00001":
			if diff := cmp.Diff(want, s.Outcomes); diff != "" {
				t.Errorf("stats outcomes of hello-00001 (-want +got):\n%s", diff)
			}
		case "idle-00001":
			if s.Outcomes.Requests != 0 || s.Outcomes.Latency != nil {
				t.Errorf("stats outcomes of a revision without requests: %+v", s.Outcomes)
			}
		}
	}
}

// TestTagRoutes: a tagged revision answers at TAG-NAME.DOMAIN (and
// TAG-NAME.NAMESPACE.DOMAIN) whatever its share; a function of that name
// keeps its own host; an untagged revision has no such host.
func TestTagRoutes(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	say := func(s string) string {
		return backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, s) })
	}
	one, two, other := say("one"), say("two"), say("other")
	tg.Routes().Update(func(s *State) {
		for _, ns := range []string{"default", "prod"} {
			s.SetFunction(FunctionInfo{Namespace: ns, Name: "hello", DefaultRevision: "hello-00001"})
			for i, addr := range []string{one, two} {
				rev := api.RevisionName("hello", int64(i+1))
				s.SetRevision(RevisionInfo{Namespace: ns, Name: rev, Function: "hello", Number: int64(i + 1)})
				s.SetEndpoint(EndpointInfo{Namespace: ns, Replica: rev + "-a", Function: "hello", Revision: rev, Addr: addr, Phase: api.ReplicaReady})
			}
			s.SetTraffic(ns, "hello", []api.TrafficTarget{
				{Revision: "hello-00001", Percent: 100, Tag: "stable"},
				{Revision: "hello-00002", Tag: "next"},
			})
		}
		// A function whose name is a tag's host keeps it.
		s.SetFunction(FunctionInfo{Namespace: "default", Name: "stable-hello", DefaultRevision: "stable-hello-00001"})
		s.SetRevision(RevisionInfo{Namespace: "default", Name: "stable-hello-00001", Function: "stable-hello", Number: 1})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "stable-hello-00001-a", Function: "stable-hello",
			Revision: "stable-hello-00001", Addr: other, Phase: api.ReplicaReady})
	})
	for _, tt := range []struct {
		host string
		code int
		body string
	}{
		{"hello.surge.localhost", 200, "one"},
		{"next-hello.surge.localhost", 200, "two"},
		{"NEXT-hello.surge.localhost:8080", 200, "two"},
		{"next-hello.prod.surge.localhost", 200, "two"},
		{"hello.prod.surge.localhost", 200, "one"},
		{"stable-hello.surge.localhost", 200, "other"},
		{"stable-hello.prod.surge.localhost", 200, "one"},
		{"old-hello.surge.localhost", 404, ""},
	} {
		resp, body := tg.do(t, "GET", tt.host, "/", nil, nil)
		if resp.StatusCode != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("%s: %d %q, want %d %q", tt.host, resp.StatusCode, body, tt.code, tt.body)
		}
	}
	// Untagged, the revision loses its host.
	tg.Routes().Update(func(s *State) {
		s.SetTraffic("default", "hello", []api.TrafficTarget{{Revision: "hello-00001", Percent: 100}})
	})
	if resp, body := tg.do(t, "GET", "next-hello.surge.localhost", "/", nil, nil); resp.StatusCode != 404 {
		t.Errorf("an untagged revision still answers at its tag's host: %d %q", resp.StatusCode, body)
	}
}
