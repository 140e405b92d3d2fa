package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/clock"
)

// TestMain fails the package's tests if any goroutine outlives them,
// but fasthttp's housekeepers, which nothing can stop: each sleeps
// between rounds without a way to wake it. They are matched anywhere in
// the stack, because the one on top of a sleeping one is time.Sleep.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Closes a HostClient's idle connections; ends, once it has none
		// left, when its sleep of MaxIdleConnDuration does.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		// Retires a server's idle workers; ends after Shutdown, when its
		// sleep (10s) does.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		// The package-wide Date header, refreshed every second for good.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// The package-wide dialer's DNS cache, cleaned while it holds
		// entries (a minute after the last dial).
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
	)
}

// testGateway is a gateway serving on a loopback port for one test.
type testGateway struct {
	*Gateway
	addr    string
	tlsAddr string // the HTTPS listener's, when the config has certificates
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

func startGateway(t *testing.T, cfg Config, deps Deps) *testGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	deps.Listener = ln
	tlsAddr := ""
	if deps.TLSListener == nil && (cfg.TLSCertFile != "" || cfg.TLSDir != "" || deps.CertIssuer != nil) {
		tln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		deps.TLSListener, tlsAddr = tln, tln.Addr().String()
	}
	if deps.Registerer == nil {
		deps.Registerer = reg
	}
	g, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{Gateway: g, addr: ln.Addr().String(), tlsAddr: tlsAddr, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { tg.err = g.Run(ctx); close(tg.done) }()
	t.Cleanup(func() {
		// A connection the client dialed and never used counts as busy for
		// its first 5s (fasthttp, like net/http, gives a new connection
		// that long to send its request), which would hold the drain past
		// DrainTimeout: hang up the client's idle connections first.
		httpClient.CloseIdleConnections()
		cancel()
		if err := tg.wait(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return tg
}

// wait returns Run's result once it has returned.
func (tg *testGateway) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-tg.done:
		return tg.err
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return")
		return nil
	}
}

// newFakeClock returns a clock.Fake that reads the wall time of the call:
// the socket deadlines the gateway computes from its Clock then lie ahead
// of the wall clock, as they would on the real one (see Deps.Clock).
func newFakeClock() *clock.Fake {
	c := clock.NewFake()
	c.Advance(time.Since(c.Now()))
	return c
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.DrainTimeout = 5 * time.Second
	return cfg
}

// route sets function fn (default namespace) with one revision rev taking
// all traffic and the given ready endpoints.
func (tg *testGateway) route(fn, rev string, concurrency int32, timeout time.Duration, addrs ...string) {
	setRoute(tg.Routes(), fn, rev, concurrency, timeout, addrs...)
}

func setRoute(u Updater, fn, rev string, concurrency int32, timeout time.Duration, addrs ...string) {
	u.Update(func(s *State) {
		ns := api.DefaultNamespace
		s.SetFunction(FunctionInfo{Namespace: ns, Name: fn, DefaultRevision: rev})
		s.SetRevision(RevisionInfo{Namespace: ns, Name: rev, Function: fn, Number: 1, Concurrency: concurrency, Timeout: timeout})
		for k, e := range s.endpoints {
			if e.Revision == rev {
				delete(s.endpoints, k)
			}
		}
		for i, a := range addrs {
			s.SetEndpoint(EndpointInfo{Namespace: ns, Replica: rev + "-r" + string(rune('a'+i)), Function: fn, Revision: rev, Node: "n1", Addr: a, Phase: api.ReplicaReady})
		}
	})
}

// backend starts a net/http server on loopback.
func backend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// closedAddr returns a loopback address that refuses connections.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}

func (tg *testGateway) do(t *testing.T, method, host, path string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+tg.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recordingActivator records Activate calls and runs a hook for each.
type recordingActivator struct {
	mu      sync.Mutex
	calls   []string
	demands []int
	hook    func(ns, fn, rev string)
}

func (a *recordingActivator) Activate(ns, fn, rev string, demand int) {
	a.mu.Lock()
	a.calls = append(a.calls, ns+"/"+fn+"/"+rev)
	a.demands = append(a.demands, demand)
	h := a.hook
	a.mu.Unlock()
	if h != nil {
		go h(ns, fn, rev)
	}
}

func (a *recordingActivator) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

func isClosedErr(err error) bool {
	return err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed"))
}
