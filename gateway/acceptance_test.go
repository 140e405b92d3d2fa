package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/api"
)

// The gateway issue's acceptance tests: each drives the real fasthttp
// server on a loopback port with real loopback replicas.

// get sends one GET through the gateway with its own error instead of
// t.Fatal, for use from many goroutines.
func (tg *testGateway) get(c *http.Client, host, path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+tg.addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestTrafficSplitWithinThreePointsOver10000Requests(t *testing.T) {
	const requests, workers, tolerance = 10_000, 8, 3.0
	revs := []string{"split-00001", "split-00002"}
	percent := []int32{70, 30}
	tg := startGateway(t, testConfig(), Deps{})
	// Each revision's replica says which revision it is.
	whoami := func(rev string) string {
		return backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, rev) })
	}
	tg.Routes().Update(func(s *State) {
		ns := api.DefaultNamespace
		s.SetFunction(FunctionInfo{Namespace: ns, Name: "split", DefaultRevision: revs[1]})
		for i, rev := range revs {
			s.SetRevision(RevisionInfo{Namespace: ns, Name: rev, Function: "split", Number: int64(i + 1)})
			s.SetEndpoint(EndpointInfo{Namespace: ns, Replica: rev + "-r", Function: "split", Revision: rev,
				Node: "n1", Addr: whoami(rev), Phase: api.ReplicaReady})
		}
		s.SetTraffic(ns, "split", []api.TrafficTarget{{Revision: revs[0], Percent: percent[0]}, {Revision: revs[1], Percent: percent[1]}})
	})

	// fasthttp's client: with net/http's the test took three times as long
	// under -race.
	client := &fasthttp.HostClient{Addr: tg.addr, MaxConns: workers}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for next.Add(1) <= requests {
				req.SetRequestURI("http://split.surge.localhost/")
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != http.StatusOK {
					t.Errorf("request: %d %q %v", resp.StatusCode(), resp.Body(), err)
					return
				}
				local[string(resp.Body())]++
			}
			mu.Lock()
			for k, v := range local {
				counts[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if counts[revs[0]]+counts[revs[1]] != requests {
		t.Fatalf("answers %v: want %d, all from the two revisions", counts, requests)
	}
	for i, rev := range revs {
		got := 100 * float64(counts[rev]) / requests
		if d := got - float64(percent[i]); d > tolerance || d < -tolerance {
			t.Errorf("%s took %.2f%% of %d requests, want %d%% ± %.0f points (counts %v)", rev, got, requests, percent[i], tolerance, counts)
		}
	}
	t.Logf("counts %v", counts)
}

// raiseFDLimit raises the soft limit on open files to the hard limit and
// returns how many can be open.
func raiseFDLimit(t *testing.T) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = raised.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			t.Logf("setrlimit to %d: %v; keeping %d", raised.Cur, err, lim.Cur)
		} else {
			lim = raised
		}
	}
	return lim.Cur
}

// slowConns opens n connections to addr that each send the start of a
// request header and then one more byte of it every tick, never finishing
// it. Connections the gateway closes are dropped from the dribble. All
// are closed when the test ends, before the gateway's drain.
func slowConns(t *testing.T, addr string, n int, tick time.Duration) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	stop, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			close(done)
			t.Fatalf("open slow connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: slow.surge.localhost\r\nX-Slow: "); err != nil {
			close(done)
			t.Fatalf("start slow request %d: %v", len(conns), err)
		}
	}
	go func() {
		defer close(done)
		live := append([]net.Conn(nil), conns...)
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for len(live) > 0 {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			kept := live[:0]
			for _, c := range live {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte{'a'}); err == nil {
					kept = append(kept, c)
				}
			}
			live = kept
		}
	}()
	return conns
}

func TestSlowlorisDoesNotStarveHealthyRequests(t *testing.T) {
	const want, healthy = 2000, 100
	// Each slow connection costs two descriptors here (both ends are in
	// this process), plus headroom for replicas, clients and the runtime.
	n := want
	if lim := raiseFDLimit(t); lim < 2*want+256 {
		n = max(int(lim)-256, 0) / 2
		t.Logf("RLIMIT_NOFILE is %d: opening %d slow connections instead of %d", lim, n, want)
		if n < 100 {
			t.Skipf("RLIMIT_NOFILE %d leaves room for only %d slow connections", lim, n)
		}
	}

	t.Run("held open under the shipped read timeout", func(t *testing.T) {
		// DefaultConfig's ReadTimeout, 30s; the slow connections come from
		// one address, as many attackers' would from many.
		cfg := testConfig()
		cfg.MaxConnsPerIP = 0
		tg := startGateway(t, cfg, Deps{})
		tg.route("ok", "ok-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "fine") }))
		slowConns(t, tg.addr, n, 50*time.Millisecond)
		eventually(t, "the gateway to hold every slow connection", func() bool {
			return int(tg.srv.GetOpenConnectionsCount()) >= n
		})

		// A new connection per request: accepting and serving must both go on.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		var wg sync.WaitGroup
		var ok atomic.Int64
		for i := range healthy {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body, err := tg.get(client, "ok.surge.localhost", "/")
				if err != nil || code != http.StatusOK || body != "fine" {
					t.Errorf("healthy request %d: %d %q %v", i, code, body, err)
					return
				}
				ok.Add(1)
			}()
		}
		wg.Wait()
		if ok.Load() != healthy {
			t.Fatalf("%d of %d healthy requests answered 200", ok.Load(), healthy)
		}
		// The slow connections were all still open while the healthy
		// requests ran: none was answered or dropped.
		if open := int(tg.srv.GetOpenConnectionsCount()); open < n {
			t.Errorf("%d connections open after the healthy requests, want the %d slow ones", open, n)
		}
	})

	t.Run("cut at the read timeout though still sending", func(t *testing.T) {
		cfg := testConfig()
		cfg.ReadTimeout = 500 * time.Millisecond
		cfg.MaxConnsPerIP = 0
		tg := startGateway(t, cfg, Deps{})
		conns := slowConns(t, tg.addr, n, 20*time.Millisecond)
		// Every connection keeps sending a byte per tick, so only a deadline
		// on the whole header, not one per read, ends it. The gateway then
		// answers 408 and closes; a byte dribbled after the close may turn
		// the close into a reset that discards the answer, so a reset
		// counts as closed too.
		answered := 0
		for i, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestTimeout {
					t.Fatalf("slow connection %d answered %d, want 408", i, resp.StatusCode)
				}
				answered++
				_, err = br.ReadByte()
			}
			if err == nil || isTimeout(err) {
				t.Fatalf("slow connection %d still open: %v", i, err)
			}
		}
		t.Logf("%d slow connections closed, %d of them with a 408 read before the close", len(conns), answered)
		eventually(t, "the gateway to hold no connection", func() bool { return tg.srv.GetOpenConnectionsCount() == 0 })
	})
}

// drainOutcome is how one closed-loop client's requests ended.
type drainOutcome struct {
	ok int
	// refused: the client's dial was refused; it sent nothing on it.
	refused bool
	// closed: a 200 said Connection: close, and the client stopped.
	closed bool
	// unanswered are ids of requests written on a keep-alive connection
	// the gateway closed before a byte of an answer came back (the
	// keep-alive race of RFC 9112 §9.3.1); the client retried on a new
	// connection, as HTTP clients do.
	unanswered []string
	// failures are everything else: an error answer, a cut answer, a
	// reset after an answer began.
	failures []string
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// drainClient sends GETs one after another on one keep-alive connection
// until its connection is closed after an answer (it stops) or a dial is
// refused (it stops). A request that gets no byte back on a reused
// connection is retried once on a new one.
func drainClient(addr string, id int, seq *atomic.Int64) drainOutcome {
	var out drainOutcome
	var conn net.Conn
	var cr *countingReader
	var br *bufio.Reader
	reused := false
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		if conn == nil {
			c, err := net.Dial("tcp", addr)
			if errors.Is(err, syscall.ECONNREFUSED) {
				out.refused = true
				return out
			}
			if err != nil {
				out.failures = append(out.failures, "dial: "+err.Error())
				return out
			}
			conn, reused = c, false
			cr = &countingReader{r: c}
			br = bufio.NewReader(cr)
		}
		rid := fmt.Sprintf("%d-%d", id, seq.Add(1))
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		cr.n = 0
		_, werr := io.WriteString(conn, "GET /?id="+rid+" HTTP/1.1\r\nHost: drain.surge.localhost\r\n\r\n")
		var resp *http.Response
		var err error
		if werr == nil {
			resp, err = http.ReadResponse(br, nil)
		} else {
			err = werr
		}
		if err != nil {
			if cr.n == 0 && !isTimeout(err) {
				// Nothing came back: the connection was closed (as idle)
				// before the gateway read the request, or as it was
				// written. Retry on a new connection.
				out.unanswered = append(out.unanswered, rid)
				conn.Close()
				conn = nil
				if !reused {
					// A fresh connection: it was in the listener's
					// backlog when the listener closed.
					return out
				}
				continue
			}
			out.failures = append(out.failures, fmt.Sprintf("%s: %v after %d bytes", rid, err, cr.n))
			return out
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok "+rid {
			out.failures = append(out.failures, fmt.Sprintf("%s: %d %q %v", rid, resp.StatusCode, body, err))
			return out
		}
		out.ok++
		if resp.Close {
			out.closed = true
			return out
		}
		reused = true
	}
}

// requestCodes sums the gateway's routed requests by code class, leaving
// out the classes no request had.
func requestCodes(t *testing.T, tg *testGateway) map[string]float64 {
	t.Helper()
	mfs, err := tg.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "surge_gateway_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code_class" && m.GetCounter().GetValue() > 0 {
					codes[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return codes
}

// TestDrainUnderLoadFailsNoRequest extends TestGracefulDrain (one request
// in flight, one idle connection) to closed-loop load: clients keep
// sending while the drain starts, and every request either is answered
// 200 or never reaches the gateway's handler.
func TestDrainUnderLoadFailsNoRequest(t *testing.T) {
	const clients = 8
	tests := []struct {
		name       string
		drainDelay time.Duration
	}{
		// Shipped: the listener closes at once. Requests written on a
		// keep-alive connection just as the drain closes it as idle get
		// no answer; that race is inherent to HTTP/1.1 keep-alive, and
		// such a request must never have reached a replica.
		{"no drain delay", 0},
		// With a delay, clients learn to leave (Connection: close) while
		// the listener is still open, so no request is caught by the close.
		{"drain delay", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			cfg := testConfig()
			cfg.DrainDelay = tt.drainDelay
			// The drain's timeout is on the Fake too, which the test
			// advances until the listener closes: far enough off that the
			// drain ends by the requests' end, not by the timeout.
			cfg.DrainTimeout = time.Hour
			tg := startGateway(t, cfg, Deps{Clock: clk})
			var seen sync.Map // request ids that reached the replica
			var served atomic.Int64
			tg.route("drain", "drain-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
				id := r.URL.Query().Get("id")
				seen.Store(id, true)
				served.Add(1)
				fmt.Fprint(w, "ok "+id)
			}))

			var seq atomic.Int64
			outcomes := make([]drainOutcome, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() { defer wg.Done(); outcomes[i] = drainClient(tg.addr, i, &seq) }()
			}
			eventually(t, "load", func() bool { return served.Load() >= 500 })
			tg.cancel()
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			if tt.drainDelay > 0 {
				// Serving goes on during the delay, and tells every client
				// to leave; only then does the listener close.
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Error("clients still sending at the end of the drain delay")
				}
				eventually(t, "the listener to close", func() bool {
					clk.Advance(tt.drainDelay)
					c, err := net.Dial("tcp", tg.addr)
					if err == nil {
						c.Close()
					}
					return err != nil
				})
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("clients did not stop after the drain")
			}
			if err := tg.wait(t); err != nil {
				t.Errorf("Run: %v", err)
			}

			ok, refused, closed, unanswered := 0, 0, 0, 0
			for i, o := range outcomes {
				ok += o.ok
				unanswered += len(o.unanswered)
				if o.refused {
					refused++
				}
				if o.closed {
					closed++
				}
				for _, f := range o.failures {
					t.Errorf("client %d: %s", i, f)
				}
				for _, id := range o.unanswered {
					if _, ok := seen.Load(id); ok {
						t.Errorf("client %d: request %s reached the replica but got no answer", i, id)
					}
				}
			}
			if int64(ok) != served.Load() {
				t.Errorf("clients got %d answers, the replica served %d requests", ok, served.Load())
			}
			// Every request the gateway routed was answered 200 to its client.
			if codes := requestCodes(t, tg); len(codes) != 1 || codes["2xx"] != float64(ok) {
				t.Errorf("gateway's answers by code %v, want only the clients' %d 200s", codes, ok)
			}
			if tt.drainDelay > 0 && (unanswered > 0 || closed != clients) {
				t.Errorf("%d requests caught by the close and %d of %d clients told to leave; want 0 and all", unanswered, closed, clients)
			}
			t.Logf("%d requests answered 200; clients: %d told to leave, %d refused; %d requests unanswered and retried",
				ok, closed, refused, unanswered)
		})
	}
}

// TestDeadReplicaReturnsWhenReportedReady goes on from
// TestRetryOnConnectRefusedAndEject (ejected at its first refusal, not
// picked while ejected) and TestDeadReplicaEjectedUntilReportedReady
// (pure): a replica that refused a connection gets traffic again once it
// answers and its sources report it Ready again — its agent restarted it
// in place — and not before, however short the back-off; its failure
// streak and back-off are forgotten.
func TestDeadReplicaReturnsWhenReportedReady(t *testing.T) {
	var goodHits, flakyHits atomic.Int64
	good := backend(t, func(w http.ResponseWriter, r *http.Request) { goodHits.Add(1); fmt.Fprint(w, "good") })
	flaky := closedAddr(t)
	cfg := testConfig()
	cfg.RetryBudgetBurst = 100
	cfg.EjectBaseBackoff = time.Millisecond
	cfg.EjectMaxBackoff = time.Hour // only the report brings it back
	tg := startGateway(t, cfg, Deps{})
	tg.route("flaky", "flaky-00001", 0, 0, flaky, good)
	var flakyEp *Endpoint
	for _, ep := range tg.Routes().Load().routes["flaky"].targets[0].rev.endpoints() {
		if ep.Addr() == flaky {
			flakyEp = ep
		}
	}
	ejections := func() float64 {
		return testutil.ToFloat64(tg.metrics.ejections.WithLabelValues("default", "flaky", "flaky-00001"))
	}
	send := func() string {
		t.Helper()
		resp, body := tg.do(t, "GET", "flaky.surge.localhost", "/", nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d %q; refusals must be retried on the other replica", resp.StatusCode, body)
		}
		return body
	}

	eventually(t, "the refusing replica to be ejected", func() bool { send(); return ejections() == 1 })
	if flakyEp.ejections.Load() != 1 {
		t.Fatalf("endpoint ejections = %d, want 1", flakyEp.ejections.Load())
	}

	// The replica comes back on the same address...
	l, err := net.Listen("tcp", flaky)
	if err != nil {
		t.Fatalf("listen again on %s: %v", flaky, err)
	}
	revived := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flakyHits.Add(1)
		fmt.Fprint(w, "flaky")
	}))
	revived.Listener.Close()
	revived.Listener = l
	revived.Start()
	defer revived.Close()
	for range 20 {
		send()
	}
	if n := flakyHits.Load(); n != 0 {
		t.Fatalf("the dead replica got %d requests before it was reported Ready again", n)
	}

	// ...and is reported Ready again.
	tg.route("flaky", "flaky-00001", 0, 0, flaky, good)
	eventually(t, "the revived replica to take traffic again", func() bool { send(); return flakyHits.Load() >= 10 })
	if n, f := flakyEp.ejections.Load(), flakyEp.fails.Load(); n != 0 || f != 0 {
		t.Errorf("after the replica answered: ejections %d, failures %d; want both forgotten", n, f)
	}
	if goodHits.Load() == 0 {
		t.Error("the good replica got nothing")
	}
	t.Logf("ejected %v times; after the return: good %d, revived %d", ejections(), goodHits.Load(), flakyHits.Load())
}
