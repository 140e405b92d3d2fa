package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/api"
)

// burst sends n requests at once and returns how many got each status
// (0: no answer), with the first transport error.
func burst(tg *testGateway, n int, method, host string, hdr map[string]string) (map[int]int, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	codes := map[int]int{}
	var first error
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			code, err := send(hc, tg.addr, method, host, hdr)
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return codes, first
}

// send sends one request and returns its status, 0 on a transport error.
func send(hc *http.Client, addr, method, host string, hdr map[string]string) (int, error) {
	req, err := http.NewRequest(method, "http://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// TestBurstFromZeroAsksForTheDemand: 500 requests at once to a revision
// at zero all wait (the default queue holds them), the gateway asks for
// replicas for all of them — its demand doubling from ask to ask, not one
// replica per ActivationInterval — and every one is answered once a
// replica is Ready.
func TestBurstFromZeroAsksForTheDemand(t *testing.T) {
	const n = 500
	act := &recordingActivator{}
	tg := startGateway(t, testConfig(), Deps{Activator: act})
	tg.route("cold", "cold-00001", 0, 0)
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "warm") })
	var once sync.Once
	act.hook = func(ns, fn, rev string) {
		act.mu.Lock()
		last := act.demands[len(act.demands)-1]
		act.mu.Unlock()
		if last >= n { // the replica is Ready once the whole burst waits
			once.Do(func() { setRoute(tg.Routes(), "cold", "cold-00001", 0, 0, addr) })
		}
	}
	codes, err := burst(tg, n, "GET", "cold.surge.localhost", nil)
	if codes[200] != n {
		t.Fatalf("answers by status %v (first error %v), want all %d 200", codes, err, n)
	}
	act.mu.Lock()
	defer act.mu.Unlock()
	d := act.demands
	if len(d) == 0 || d[len(d)-1] != n {
		t.Fatalf("demands asked for %v; want the last to be the whole burst's %d", d, n)
	}
	doublings := 0
	for i := 1; i < len(d); i++ {
		if d[i] <= d[i-1] {
			t.Errorf("ask %d for %d after %d: asked again for no more", i, d[i], d[i-1])
		}
		if d[i] >= 2*d[i-1] {
			doublings++
		}
	}
	if doublings < 5 {
		t.Errorf("demands asked for %v: %d doublings; want a burst asked for as it grows, not one request at a time", d, doublings)
	}
	t.Logf("asked for %v", d)
}

// TestQueueBoundsAnswer503WithRetryAfter: past a function's own
// queueDepth, and past the gateway's room for waiting requests in all
// (MaxQueued), a request gets 503 with Retry-After at once.
func TestQueueBoundsAnswer503WithRetryAfter(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueued = 3
	tg := startGateway(t, cfg, Deps{})
	addr, entered, release := blockingBackend(t)
	tg.Routes().Update(func(s *State) {
		for _, fn := range []string{"small", "big"} {
			rev := fn + "-00001"
			s.SetFunction(FunctionInfo{Namespace: api.DefaultNamespace, Name: fn, DefaultRevision: rev})
			s.SetRevision(RevisionInfo{Namespace: api.DefaultNamespace, Name: rev, Function: fn, Number: 1, Concurrency: 1,
				QueueDepth: map[string]int{"small": 1, "big": 0}[fn]})
			s.SetEndpoint(EndpointInfo{Namespace: api.DefaultNamespace, Replica: rev + "-a", Function: fn, Revision: rev,
				Addr: addr, Phase: api.ReplicaReady})
		}
	})
	small := tg.Routes().Load().routes["small"].targets[0].rev
	big := tg.Routes().Load().routes["big"].targets[0].rev
	results := make(chan int, 10)
	get := func(fn string) {
		code, _ := send(httpClient, tg.addr, "GET", fn+".surge.localhost", nil)
		results <- code
	}
	expect503 := func(fn, msg string) {
		t.Helper()
		resp, body := tg.do(t, "GET", fn+".surge.localhost", "/", nil, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, msg) {
			t.Errorf("%s: %d %q Retry-After=%q, want 503 saying %q with Retry-After", fn, resp.StatusCode, body, resp.Header.Get("Retry-After"), msg)
		}
	}

	go get("small")
	<-entered // small's replica slot is taken
	go get("small")
	eventually(t, "one request of small to wait", func() bool { return small.queue.length() == 1 })
	expect503("small", msgQueueFull)

	go get("big")
	<-entered
	go get("big")
	go get("big")
	eventually(t, "two requests of big to wait", func() bool { return big.queue.length() == 2 })
	expect503("big", msgGatewayFull) // 3 wait in all: the gateway's room

	close(release)
	for range 5 {
		if code := <-results; code != 200 {
			t.Errorf("a running or waiting request got %d", code)
		}
	}
}

// TestReplicaKilledUnderLoadFailsNoGET is R1 in miniature: one of two
// replicas dies (its listener closes and its connections are cut) while
// GETs flow; every GET is answered 200 — the ones it held are retried on
// the other replica — and the dead one is ejected.
func TestReplicaKilledUnderLoadFailsNoGET(t *testing.T) {
	var victimHits atomic.Int64
	victim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		victimHits.Add(1)
		fmt.Fprint(w, "victim")
	}))
	defer victim.Close()
	survivor := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "survivor") })
	tg := startGateway(t, testConfig(), Deps{})
	victimAddr := strings.TrimPrefix(victim.URL, "http://")
	tg.route("r1", "r1-00001", 0, 0, victimAddr, survivor)

	const clients = 16
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer hc.CloseIdleConnections()
	for range clients {
		wg.Go(func() {
			for !stop.Load() {
				code, err := send(hc, tg.addr, "GET", "r1.surge.localhost", nil)
				if code == 200 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, %v", code, err))
			}
		})
	}
	eventually(t, "the victim to serve under load", func() bool { return victimHits.Load() >= 200 })
	victim.Listener.Close()
	victim.CloseClientConnections() // SIGKILL: every connection reset
	before := ok.Load()
	eventually(t, "load to go on after the kill", func() bool { return ok.Load() >= before+2000 })
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d GETs failed after a replica died (first: %v); want 0", f, f+ok.Load(), firstErr.Load())
	}
	// Ejected at its first refused connection, or after the resets in a
	// row of the connections it had: either way out.
	for _, ep := range tg.Routes().Load().routes["r1"].targets[0].rev.endpoints() {
		if ejected := !ep.eligible(tg.clock.Now().UnixNano()); ejected != (ep.Addr() == victimAddr) {
			t.Errorf("replica %s: ejected %v, want %v", ep.Addr(), ejected, !ejected)
		}
	}
	t.Logf("%d GETs answered, %v retries", ok.Load(), testutil.ToFloat64(tg.metrics.retries.WithLabelValues("default", "r1", "r1-00001")))
}

// TestEjectionOn5xxAnswers: a replica that answers 5xx EjectAfter times
// in a row is ejected — its answers still reach their clients, as a 5xx
// is the function's answer — and no more than half of a revision's
// replicas are, even when all fail.
func TestEjectionOn5xxAnswers(t *testing.T) {
	var sick, healthy atomic.Int64
	sickAddr := backend(t, func(w http.ResponseWriter, r *http.Request) {
		sick.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	healthyAddr := backend(t, func(w http.ResponseWriter, r *http.Request) { healthy.Add(1); fmt.Fprint(w, "ok") })
	cfg := testConfig()
	cfg.EjectBaseBackoff, cfg.EjectMaxBackoff = time.Minute, time.Minute // no probation within the test
	tg := startGateway(t, cfg, Deps{})
	tg.route("mixed", "mixed-00001", 0, 0, sickAddr, healthyAddr)
	codes := map[int]int{}
	for range 200 {
		code, _ := send(httpClient, tg.addr, "POST", "mixed.surge.localhost", nil)
		codes[code]++
	}
	if codes[500] != 5 || codes[200] != 195 {
		t.Errorf("answers %v; want the sick replica's 5 500s, then 195 200s from the other", codes)
	}
	if n := testutil.ToFloat64(tg.metrics.ejections.WithLabelValues("default", "mixed", "mixed-00001")); n != 1 {
		t.Errorf("%v ejections, want 1", n)
	}

	// Both sick: one is ejected, the other keeps serving (its 500s).
	other := backend(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", http.StatusBadGateway) })
	tg.route("sick", "sick-00001", 0, 0, sickAddr, other)
	codes = map[int]int{}
	for range 100 {
		code, _ := send(httpClient, tg.addr, "GET", "sick.surge.localhost", nil)
		codes[code]++
	}
	rev := tg.Routes().Load().routes["sick"].targets[0].rev
	ejected := 0
	for _, ep := range rev.endpoints() {
		if !ep.eligible(tg.clock.Now().UnixNano()) {
			ejected++
		}
	}
	if ejected != 1 || codes[500]+codes[502] != 100 {
		t.Errorf("%d of 2 failing replicas ejected, answers %v; want 1 ejected and every answer passed on", ejected, codes)
	}
}

// TestEjectionOnResets: a replica that cuts its connections before
// answering is ejected after EjectAfter in a row; the GETs it cut, and a
// POST its client marked with an Idempotency-Key, are retried on the
// other replica, while a plain POST is not.
func TestEjectionOnResets(t *testing.T) {
	var cut atomic.Int64
	resetter := backend(t, func(w http.ResponseWriter, r *http.Request) {
		cut.Add(1)
		c, _, _ := w.(http.Hijacker).Hijack()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not a close
		}
		c.Close()
	})
	good := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	cfg := testConfig()
	cfg.RetryBudgetBurst = 100
	cfg.EjectBaseBackoff, cfg.EjectMaxBackoff = time.Minute, time.Minute // no probation within the test
	tg := startGateway(t, cfg, Deps{})
	tg.route("reset", "reset-00001", 0, 0, resetter, good)
	key := map[string]string{"Idempotency-Key": "order-1"}
	for i := range 100 {
		method, hdr := "GET", map[string]string(nil)
		if i%2 == 1 {
			method, hdr = "POST", key
		}
		if code, err := send(httpClient, tg.addr, method, "reset.surge.localhost", hdr); code != 200 {
			t.Fatalf("%s %d: %d %v; a cut retry-safe request must be retried", method, i, code, err)
		}
	}
	if n := cut.Load(); n != 5 {
		t.Errorf("the resetting replica cut %d requests, want 5 (ejected after 5 in a row)", n)
	}
	tg.route("plain", "plain-00001", 0, 0, resetter)
	if code, _ := send(httpClient, tg.addr, "POST", "plain.surge.localhost", nil); code != http.StatusBadGateway {
		t.Errorf("a cut POST without an Idempotency-Key: %d, want 502 (not retried)", code)
	}
}

// TestRetryBudgetUnderLoad: with the default settings, when every replica
// of a revision cuts every request, the retries stay within the budget —
// a fifth of the requests and the burst — rather than doubling the load
// on a failing revision.
func TestRetryBudgetUnderLoad(t *testing.T) {
	var cuts atomic.Int64
	cutter := func(w http.ResponseWriter, r *http.Request) {
		cuts.Add(1)
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}
	cfg := DefaultConfig()
	cfg.DrainTimeout = testConfig().DrainTimeout
	cfg.MaxConnsPerIP = 0 // the burst's 2000 connections come from one address
	tg := startGateway(t, cfg, Deps{})
	tg.route("down", "down-00001", 0, 0, backend(t, cutter), backend(t, cutter), backend(t, cutter), backend(t, cutter))
	const n = 2000
	codes, _ := burst(tg, n, "GET", "down.surge.localhost", nil)
	if codes[http.StatusBadGateway] != n {
		t.Errorf("answers %v, want %d 502s", codes, n)
	}
	retries := testutil.ToFloat64(tg.metrics.retries.WithLabelValues("default", "down", "down-00001"))
	limit := cfg.RetryBudgetRatio*n + float64(cfg.RetryBudgetBurst)
	// Each request reaches a replica at least once, and a retry at most
	// once more (a retry whose connection fails before the replica
	// accepts it, on a loaded machine, reaches none).
	if attempts := cuts.Load(); retries < float64(cfg.RetryBudgetBurst) || retries > limit || attempts < n || attempts > n+int64(retries) {
		t.Errorf("%v retries and %d attempts for %d requests; want at least the burst, at most %v retries (%.0f%% and a burst of %d), each at most one attempt more",
			retries, cuts.Load(), n, limit, 100*cfg.RetryBudgetRatio, cfg.RetryBudgetBurst)
	}
	t.Logf("%d requests, %v retries (budget %v)", n, retries, limit)
}

// TestMoreThanAReplicasConnectionsWait: a revision without a concurrency
// limit still has MaxConnsPerEndpoint connections to each replica; the
// requests beyond them wait for one rather than fail.
func TestMoreThanAReplicasConnectionsWait(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerEndpoint = 2
	tg := startGateway(t, cfg, Deps{})
	addr, entered, release := blockingBackend(t)
	tg.route("many", "many-00001", 0, 0, addr)
	results := make(chan int, 5)
	for range 5 {
		go func() { code, _ := send(httpClient, tg.addr, "GET", "many.surge.localhost", nil); results <- code }()
	}
	<-entered
	<-entered
	rev := tg.Routes().Load().routes["many"].targets[0].rev
	eventually(t, "three requests to wait", func() bool { return rev.queue.length() == 3 })
	close(release)
	for range 5 {
		if code := <-results; code != 200 {
			t.Errorf("status %d, want 200", code)
		}
	}
}
