package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestColdStartWaitsForEndpointAndActivates(t *testing.T) {
	act := &recordingActivator{}
	tg := startGateway(t, testConfig(), Deps{Activator: act})
	tg.route("cold", "cold-00001", 0, 0) // no replica yet
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "warm") })
	act.hook = func(ns, fn, rev string) {
		setRoute(tg.Routes(), "cold", "cold-00001", 0, 0, addr)
	}
	resp, body := tg.do(t, "GET", "cold.surge.localhost", "/", nil, nil)
	if resp.StatusCode != 200 || body != "warm" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if act.count() != 1 {
		t.Errorf("Activate called %d times, want 1", act.count())
	}
	act.mu.Lock()
	if act.calls[0] != "default/cold/cold-00001" {
		t.Errorf("Activate(%s)", act.calls[0])
	}
	act.mu.Unlock()
}

func TestQueueDeadlineAnswers504(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("cold", "cold-00001", 0, 50*time.Millisecond) // no replica ever comes
	resp, body := tg.do(t, "GET", "cold.surge.localhost", "/", nil, nil)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, msgNoReplicaReady) {
		t.Fatalf("got %d %q, want 504 saying %q", resp.StatusCode, body, msgNoReplicaReady)
	}
	if got := testutil.ToFloat64(tg.metrics.requests.WithLabelValues("default", "cold", "cold-00001", "5xx")); got != 1 {
		t.Errorf("requests{504} = %v", got)
	}
}

func TestQueueDeadlineSaysTheReplicasWereBusy(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueueWait = 100 * time.Millisecond
	tg := startGateway(t, cfg, Deps{})
	addr, entered, release := blockingBackend(t)
	tg.route("busy", "busy-00001", 1, time.Minute, addr) // one request at a time
	done := make(chan struct{})
	go func() {
		defer close(done)
		tg.do(t, "GET", "busy.surge.localhost", "/", nil, nil)
	}()
	<-entered // the replica's only slot is taken until release
	resp, body := tg.do(t, "GET", "busy.surge.localhost", "/", nil, nil)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, msgAllBusy) {
		t.Errorf("got %d %q, want 504 saying %q", resp.StatusCode, body, msgAllBusy)
	}
	close(release)
	<-done
}

// blockingBackend holds every request until release is closed.
func blockingBackend(t *testing.T) (addr string, entered chan struct{}, release chan struct{}) {
	entered = make(chan struct{}, 100)
	release = make(chan struct{})
	addr = backend(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		fmt.Fprint(w, "done")
	})
	return addr, entered, release
}

func TestQueueFullAnswers503AndQueuedRequestsProceed(t *testing.T) {
	cfg := testConfig()
	cfg.QueueDepth = 1
	tg := startGateway(t, cfg, Deps{})
	addr, entered, release := blockingBackend(t)
	tg.route("busy", "busy-00001", 1, 0, addr) // one replica, one request at a time

	results := make(chan string, 2)
	get := func() {
		req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
		req.Host = "busy.surge.localhost"
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			results <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	go get()
	<-entered // the replica's only slot is taken
	go get()
	rev := tg.Routes().Load().routes["busy"].targets[0].rev
	eventually(t, "a request to queue", func() bool { return rev.queue.length() == 1 })

	resp, body := tg.do(t, "GET", "busy.surge.localhost", "/", nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d %q Retry-After=%q, want 503 with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	close(release)
	for range 2 {
		if r := <-results; r != "200 done" {
			t.Errorf("queued or running request got %q", r)
		}
	}
	if rev.queue.length() != 0 {
		t.Errorf("queue length %d after all done", rev.queue.length())
	}
	eps := rev.endpoints()
	eventually(t, "in-flight to drop to 0", func() bool { return eps[0].InFlight() == 0 })
}

func TestConcurrencyLimitIsNeverExceeded(t *testing.T) {
	const limit, replicas, requests = 2, 2, 40
	var cur, peak atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // hold the slot a moment so requests overlap
		cur.Add(-1)
		fmt.Fprint(w, "ok")
	}
	var addrs []string
	var perReplica [replicas]atomic.Int64
	for i := range replicas {
		addrs = append(addrs, backend(t, func(w http.ResponseWriter, r *http.Request) {
			n := perReplica[i].Add(1)
			defer perReplica[i].Add(-1)
			if n > limit {
				t.Errorf("replica %d saw %d concurrent requests, limit %d", i, n, limit)
			}
			h(w, r)
		}))
	}
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("lim", "lim-00001", limit, 0, addrs...)
	var wg sync.WaitGroup
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := tg.do(t, "GET", "lim.surge.localhost", "/", nil, nil)
			if resp.StatusCode != 200 {
				t.Errorf("status %d %q", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > limit*replicas {
		t.Errorf("peak concurrency %d > %d", p, limit*replicas)
	}
}

func TestRetryOnConnectRefusedAndEject(t *testing.T) {
	var hits atomic.Int64
	good := backend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s", b)
	})
	bad := closedAddr(t)
	cfg := testConfig()
	cfg.RetryBudgetBurst = 100
	tg := startGateway(t, cfg, Deps{})
	tg.route("flaky", "flaky-00001", 0, 0, bad, good)
	rev := tg.Routes().Load().routes["flaky"].targets[0].rev
	// POST is not idempotent, but a refused connection sent nothing: safe.
	for i := range 30 {
		resp, body := tg.do(t, "POST", "flaky.surge.localhost", "/", strings.NewReader(fmt.Sprint(i)), nil)
		if resp.StatusCode != 200 || body != fmt.Sprint(i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if hits.Load() != 30 {
		t.Errorf("good replica served %d, want 30", hits.Load())
	}
	connectErrs := testutil.ToFloat64(tg.metrics.connectErrors.WithLabelValues("default", "flaky", "flaky-00001"))
	retries := testutil.ToFloat64(tg.metrics.retries.WithLabelValues("default", "flaky", "flaky-00001"))
	ejections := testutil.ToFloat64(tg.metrics.ejections.WithLabelValues("default", "flaky", "flaky-00001"))
	if connectErrs != 1 || retries != 1 || ejections != 1 {
		t.Errorf("connect errors %v, retries %v, ejections %v; want 1, 1, 1 (ejected at its first refusal and not picked again)", connectErrs, retries, ejections)
	}
	var badEp *Endpoint
	for _, ep := range rev.endpoints() {
		if ep.Addr() == bad {
			badEp = ep
		}
	}
	if badEp == nil || badEp.ejectedUntil.Load() <= time.Now().UnixNano() {
		t.Errorf("refusing replica is not ejected")
	}
}

func TestNoRetryAfterNonIdempotentRequestWasSent(t *testing.T) {
	var hits atomic.Int64
	// The replica reads the request and drops the connection without answering.
	hangup := backend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.ReadAll(r.Body)
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	})
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("drop", "drop-00001", 0, 0, hangup)
	resp, _ := tg.do(t, "POST", "drop.surge.localhost", "/", strings.NewReader("pay once"), nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if hits.Load() != 1 {
		t.Errorf("replica saw the POST %d times, want 1", hits.Load())
	}
}

func TestRetryIdempotentOnTerminatingReplica(t *testing.T) {
	var dropped atomic.Int64
	var tg *testGateway
	terminating := backend(t, func(w http.ResponseWriter, r *http.Request) {
		// The replica is told to terminate while it holds the request, and
		// drops the connection without answering.
		tg.Routes().Update(func(s *State) {
			for k, e := range s.endpoints {
				if e.Replica == "term-00001-ra" {
					e.Phase = "Terminating"
					s.endpoints[k] = e
				}
			}
		})
		dropped.Add(1)
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	})
	good := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	tg = startGateway(t, testConfig(), Deps{})
	// The first attempt picks either replica at random; go on until some
	// requests have hit the terminating one.
	for i := 0; i < 200 && dropped.Load() < 3; i++ {
		setRoute(tg.Routes(), "term", "term-00001", 0, 0, terminating, good)
		resp, body := tg.do(t, "GET", "term.surge.localhost", "/", nil, nil)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET %d: %d %q; an idempotent request failing on a terminating replica must be retried", i, resp.StatusCode, body)
		}
	}
	if dropped.Load() < 3 {
		t.Fatalf("the terminating replica was picked %d times", dropped.Load())
	}
}

func TestResponseStartTimeout(t *testing.T) {
	addr, _, release := blockingBackend(t)
	defer close(release)
	t.Run("gateway default", func(t *testing.T) {
		cfg := testConfig()
		cfg.ResponseStartTimeout = 50 * time.Millisecond
		tg := startGateway(t, cfg, Deps{})
		tg.route("slow", "slow-00001", 0, 0, addr)
		resp, body := tg.do(t, "GET", "slow.surge.localhost", "/", nil, nil)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q, want 504", resp.StatusCode, body)
		}
	})
	t.Run("per revision", func(t *testing.T) {
		tg := startGateway(t, testConfig(), Deps{})
		tg.Routes().Update(func(s *State) {
			s.SetFunction(FunctionInfo{Namespace: "default", Name: "slow"})
			s.SetRevision(RevisionInfo{Namespace: "default", Name: "slow-00001", Function: "slow", ResponseStartTimeout: 50 * time.Millisecond})
			s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r", Function: "slow", Revision: "slow-00001", Addr: addr, Phase: "Ready"})
		})
		resp, body := tg.do(t, "GET", "slow.surge.localhost", "/", nil, nil)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q, want 504", resp.StatusCode, body)
		}
	})
}

func TestIdleStreamTimeoutCutsSilentStream(t *testing.T) {
	cfg := testConfig()
	cfg.IdleStreamTimeout = 50 * time.Millisecond
	tg := startGateway(t, cfg, Deps{})
	release := make(chan struct{})
	defer close(release)
	tg.route("quiet", "quiet-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
	}))
	req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
	req.Host = "quiet.surge.localhost"
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("stream ended cleanly with %q; want it cut", b)
	}
	if string(b) != "data: one\n\n" {
		t.Errorf("got %q before the cut", b)
	}
}

func TestTotalTimeoutPerFunction(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	addr, _, release := blockingBackend(t)
	defer close(release)
	tg.route("capped", "capped-00001", 0, 80*time.Millisecond, addr)
	resp, _ := tg.do(t, "GET", "capped.surge.localhost", "/", nil, nil)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
}

func TestRemovedEndpointsStopGettingTraffic(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	a := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "a") })
	b := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "b") })
	tg.route("mv", "mv-00001", 0, 0, a)
	if _, body := tg.do(t, "GET", "mv.surge.localhost", "/", nil, nil); body != "a" {
		t.Fatalf("body %q", body)
	}
	tg.route("mv", "mv-00001", 0, 0, b)
	for range 10 {
		if _, body := tg.do(t, "GET", "mv.surge.localhost", "/", nil, nil); body != "b" {
			t.Fatalf("body %q after the move", body)
		}
	}
	tg.Routes().Update(func(s *State) { s.DeleteNode("n1") })
	if eps := tg.Routes().Load().routes["mv"].targets[0].rev.endpoints(); len(eps) != 0 {
		t.Errorf("endpoints after their node died: %v", eps)
	}
}

// Route updates race with requests: run under -race, every request must
// still be answered by a ready replica.
func TestRouteUpdatesDuringTraffic(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	a := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	b := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	tg.route("hot", "hot-00001", 4, 0, a)
	stop := make(chan struct{})
	updated := make(chan struct{})
	go func() {
		defer close(updated)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				tg.route("hot", "hot-00001", 4, 0, a, b)
			} else {
				tg.route("hot", "hot-00001", 4, 0, b)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				resp, body := tg.do(t, "GET", "hot.surge.localhost", "/", nil, nil)
				if resp.StatusCode != 200 {
					t.Errorf("status %d %q", resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-updated
}
