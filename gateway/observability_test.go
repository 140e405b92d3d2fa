package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestColdStartIsTimedAndTold: a request to a revision without a replica
// waits for the one its activation brings, and its answer says how long
// (Surge-Cold-Start, milliseconds); the cold start is observed once; a
// request to the warm revision says nothing.
func TestColdStartIsTimedAndTold(t *testing.T) {
	act := &recordingActivator{}
	tg := startGateway(t, testConfig(), Deps{Activator: act})
	tg.route("cold", "cold-00001", 0, 0) // no replica yet
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "warm") })
	act.hook = func(ns, fn, rev string) { setRoute(tg.Routes(), "cold", "cold-00001", 0, 0, addr) }

	resp, body := tg.do(t, "GET", "cold.surge.localhost", "/", nil, nil)
	if resp.StatusCode != 200 || body != "warm" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	ms, err := strconv.Atoi(resp.Header.Get("Surge-Cold-Start"))
	if err != nil || ms < 0 {
		t.Errorf("Surge-Cold-Start = %q, want the milliseconds waited", resp.Header.Get("Surge-Cold-Start"))
	}
	if n := testutil.CollectAndCount(tg.metrics.coldStarts); n != 1 {
		t.Errorf("%d cold start series, want the function's one", n)
	}
	if got := histogramCount(t, tg, "surge_cold_start_seconds"); got != 1 {
		t.Errorf("%d cold starts observed, want 1", got)
	}
	if got := histogramCount(t, tg, "surge_gateway_queue_wait_seconds"); got != 1 {
		t.Errorf("%d queue waits observed, want 1", got)
	}

	resp, _ = tg.do(t, "GET", "cold.surge.localhost", "/", nil, nil)
	if h := resp.Header.Get("Surge-Cold-Start"); h != "" {
		t.Errorf("a warm request says Surge-Cold-Start: %s", h)
	}
	if got := histogramCount(t, tg, "surge_cold_start_seconds"); got != 1 {
		t.Errorf("%d cold starts after a warm request, want 1", got)
	}

	// The function's series go with its last revision.
	tg.Routes().Update(func(s *State) { s.DeleteRevision("default", "cold-00001") })
	if n := testutil.CollectAndCount(tg.metrics.coldStarts); n != 0 {
		t.Errorf("%d cold start series after the function's revision went", n)
	}
}

// histogramCount is the summed sample count of a histogram family.
func histogramCount(t *testing.T, tg *testGateway, name string) uint64 {
	t.Helper()
	mfs, err := tg.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestTraceparentPassesOrStarts: a client's traceparent reaches the
// replica as it came; a request without one gets a new, valid one — on the
// path that forwards the client's header block as is and on the one that
// copies it (a body).
func TestTraceparentPassesOrStarts(t *testing.T) {
	seen := make(chan string, 1)
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- strings.Join(r.Header.Values("Traceparent"), "|")
	})
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("hello", "hello-00001", 0, 0, addr)
	const theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name, method, body, header string
	}{
		{"raw head, theirs", "GET", "", theirs},
		{"raw head, none", "GET", "", ""},
		{"copied head, theirs", "POST", "data", theirs},
		{"copied head, none", "POST", "data", ""},
	} {
		hdr := map[string]string{}
		if tc.header != "" {
			hdr["traceparent"] = tc.header
		}
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var resp *http.Response
		if body != nil {
			resp, _ = tg.do(t, tc.method, "hello.surge.localhost", "/", body, hdr)
		} else {
			resp, _ = tg.do(t, tc.method, "hello.surge.localhost", "/", nil, hdr)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", tc.name, resp.Status)
		}
		got := <-seen
		switch {
		case tc.header != "" && got != tc.header:
			t.Errorf("%s: the replica saw traceparent %q, want the client's %q", tc.name, got, tc.header)
		case tc.header == "" && traceID([]byte(got)) == nil:
			t.Errorf("%s: the replica saw traceparent %q, want a new valid one", tc.name, got)
		}
	}
}

// syncBuffer is a bytes.Buffer the access log's writer fills while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAccessLog: in full mode every request is a JSON line naming its
// function, status, trace and replica; in sampled mode (one in a
// million here) only the 5xx answers are.
func TestAccessLog(t *testing.T) {
	for _, mode := range []AccessLogMode{AccessLogFull, AccessLogSampled} {
		t.Run(string(mode), func(t *testing.T) {
			var out syncBuffer
			cfg := testConfig()
			cfg.AccessLog, cfg.AccessLogSample = mode, 1_000_000
			tg := startGateway(t, cfg, Deps{AccessLog: &out})
			ok := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
			tg.route("hello", "hello-00001", 0, 0, ok)
			tg.route("broken", "broken-00001", 0, 0, closedAddr(t))
			const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			tg.do(t, "GET", "hello.surge.localhost", "/a\"b?q=1", nil, map[string]string{"traceparent": tp})
			tg.do(t, "GET", "broken.surge.localhost", "/x", nil, nil)
			tg.do(t, "GET", "nothing.surge.localhost", "/", nil, nil)
			httpClient.CloseIdleConnections()
			tg.cancel()
			if err := tg.wait(t); err != nil { // the writer has written everything
				t.Fatal(err)
			}
			var lines []map[string]any
			for line := range strings.Lines(out.String()) {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("access log line %q: %v", line, err)
				}
				lines = append(lines, m)
			}
			byFn := map[string]map[string]any{}
			for _, l := range lines {
				fn, _ := l["function"].(string)
				byFn[fn] = l
			}
			if mode == AccessLogSampled {
				if len(lines) != 1 || byFn["broken"]["status"] != float64(502) {
					t.Fatalf("sampled log %v, want the 502 alone", lines)
				}
				return
			}
			if len(lines) != 3 {
				t.Fatalf("full log has %d lines, want 3:\n%s", len(lines), out.String())
			}
			h := byFn["hello"]
			for k, want := range map[string]any{"method": "GET", "host": "hello.surge.localhost", "path": "/a%22b", "status": float64(200),
				"namespace": "default", "revision": "hello-00001", "replica": ok, "client": "127.0.0.1",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"} {
				if h[k] != want {
					t.Errorf("hello's record: %s = %v, want %v (%v)", k, h[k], want, h)
				}
			}
			if d, _ := h["duration_seconds"].(float64); d <= 0 {
				t.Errorf("hello's record: duration %v", h["duration_seconds"])
			}
			if byFn["broken"]["status"] != float64(502) || byFn[""]["status"] != float64(404) {
				t.Errorf("records of the 502 and the unrouted 404: %v, %v", byFn["broken"], byFn[""])
			}
			if id, _ := byFn["broken"]["trace_id"].(string); len(id) != 32 {
				t.Errorf("the request without a traceparent is logged with trace id %q, want the one the gateway started", id)
			}
		})
	}
}

func TestAccessLogDropsWhenFull(t *testing.T) {
	l := newAccessLog(AccessLogFull, 1, 2, &syncBuffer{})
	var dropped droppedCounter
	l.dropped = &dropped
	r := &accessRecord{status: 200, coldMs: -1}
	for range 5 {
		l.record(r) // nothing writes: two fit, three drop
	}
	if dropped != 3 {
		t.Errorf("%d dropped, want 3", dropped)
	}
	if newAccessLog(AccessLogOff, 1, 2, &syncBuffer{}) != nil || newAccessLog(AccessLogFull, 1, 2, nil) != nil {
		t.Error("an access log that is off, or has no writer, was made")
	}
}

type droppedCounter int

func (d *droppedCounter) Inc() { *d++ }

func TestAppendJSONString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         `"plain"`,
		`a"b\c`:         `"a\"b\\c"`,
		"tab\tnl\n\x7f": `"tab\u0009nl\u000a\u007f"`,
		"é→":            `"é→"`,
		"bad\xffutf8":   `"bad` + "\ufffd" + `utf8"`,
	} {
		got := string(appendJSONString(nil, []byte(in)))
		if got != want {
			t.Errorf("appendJSONString(%q) = %s, want %s", in, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s is not JSON: %v", got, err)
		}
	}
}
