package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

func TestGracefulDrain(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig()
	cfg.DrainDelay = time.Second
	// The drain's timeout is on the Fake too, which the test advances a
	// second at a time until the listener closes: far enough off that the
	// request in flight is not cut.
	cfg.DrainTimeout = time.Hour
	tg := startGateway(t, cfg, Deps{Clock: clk})
	addr, entered, release := blockingBackend(t)
	tg.route("slow", "slow-00001", 0, 0, addr)

	// An idle keep-alive connection.
	idle, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	io.WriteString(idle, "GET /.surge/ready HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("ready before drain: %v %v", resp, err)
	}

	// A request in flight.
	result := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
		req.Host = "slow.surge.localhost"
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-entered

	tg.cancel()
	eventually(t, "readiness to turn false", func() bool { return !tg.Ready() })
	// During DrainDelay the gateway still serves, and says it is not ready.
	status, _ := rawExchange(t, tg.addr, "GET /.surge/ready HTTP/1.1\r\nHost: x\r\n\r\n")
	if status != http.StatusServiceUnavailable {
		t.Errorf("health during drain: %d, want 503", status)
	}
	// After the delay the listener closes and idle keep-alives are closed.
	eventually(t, "the listener to close", func() bool {
		clk.Advance(time.Second)
		c, err := net.Dial("tcp", tg.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	eventually(t, "the idle connection to close", func() bool {
		idle.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := idleR.ReadByte()
		return err != nil && !isTimeout(err)
	})
	select {
	case <-tg.done:
		t.Fatal("Run returned with a request in flight")
	default:
	}
	close(release)
	if r := <-result; r != "200 done" {
		t.Errorf("in-flight request got %q", r)
	}
	if err := tg.wait(t); err != nil {
		t.Errorf("Run: %v", err)
	}
}

type sumSink struct {
	mu       sync.Mutex
	requests map[string]int64
	windows  int
}

func (s *sumSink) ReportStats(st []RevisionStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.windows++
	for _, r := range st {
		s.requests[r.Namespace+"/"+r.Revision] += r.Requests
	}
}

func (s *sumSink) get(k string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[k]
}

func TestStatsReportedEveryInterval(t *testing.T) {
	clk := newFakeClock()
	sink := &sumSink{requests: map[string]int64{}}
	tg := startGateway(t, testConfig(), Deps{Clock: clk, Stats: sink})
	tg.route("hello", "hello-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	for range 3 {
		tg.do(t, "GET", "hello.surge.localhost", "/", nil, nil)
	}
	eventually(t, "3 requests in the stats", func() bool {
		clk.Advance(time.Second)
		return sink.get("default/hello-00001") == 3
	})
	st := tg.Stats()
	if len(st) != 1 || st[0].Function != "hello" || st[0].Window != time.Second {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestMetricsRegisteredWithBoundedLabels(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	tg.do(t, "GET", "hello.surge.localhost", "/", nil, nil)
	for i := range 20 {
		tg.do(t, "GET", fmt.Sprintf("random%d.surge.localhost", i), "/", nil, nil)
	}
	names := []string{
		"surge_gateway_requests_total", "surge_gateway_unrouted_requests_total",
		"surge_gateway_request_duration_seconds", "surge_gateway_inflight_requests",
		"surge_gateway_queue_depth", "surge_gateway_upstream_connect_errors_total",
		"surge_gateway_retries_total", "surge_gateway_ejections_total",
		"surge_gateway_queue_wait_seconds", "surge_cold_start_seconds",
		"surge_gateway_queue_rejections_total", "surge_gateway_activations_total",
	}
	got, err := testutil.GatherAndCount(tg.reg, names...)
	if err != nil {
		t.Fatal(err)
	}
	// One revision: a request counter per code class, a rejection counter
	// per bound, one series of each of the nine other families, and one
	// code for the 20 unrouted requests, whatever their hosts.
	if want := len(codeClasses) + 2 + 9 + 1; got != want {
		t.Errorf("%d series, want %d", got, want)
	}
	telemetrytest.Check(t, "the gateway's registry", tg.reg, names...)
	if v := testutil.ToFloat64(tg.metrics.unrouted.WithLabelValues("404")); v != 20 {
		t.Errorf("unrouted 404 = %v", v)
	}
	// Removing the revision removes its series.
	tg.Routes().Update(func(s *State) { s.DeleteRevision("default", "hello-00001") })
	got, _ = testutil.GatherAndCount(tg.reg, names...)
	if got != 1 {
		t.Errorf("%d series after the revision went, want 1 (unrouted)", got)
	}
}

func TestRunReturnsWhenCanceledAtOnce(t *testing.T) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g, err := New(testConfig(), Deps{Listener: ln})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}
