package gossip_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/gossip/gossiptest"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// member a test starts must be stopped, and memberlist's goroutines with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig is a member on loopback with a free port and timings short
// enough for tests. Logs are kept and printed only if the test fails.
func testConfig(t *testing.T, name string) gossip.Config {
	t.Helper()
	cfg := gossip.DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Key = testKey
	// Fast failure detection, with slack for -race on two busy cores: a
	// false death in the middle of a test makes it flaky.
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 150 * time.Millisecond
	cfg.SuspicionMult = 4
	cfg.GossipInterval = 50 * time.Millisecond
	// Long, so that what a member learns comes from broadcasts and the sync
	// at join, not from a periodic sync.
	cfg.PushPullInterval = time.Minute
	cfg.StreamTimeout = 2 * time.Second
	cfg.GossipToTheDeadTime = 5 * time.Second
	cfg.ReconnectInterval = 300 * time.Millisecond
	cfg.LeaveTimeout = 500 * time.Millisecond
	cfg.Logger = testLogger(t)
	return cfg
}

// testLogger keeps logs in memory and prints them when the test fails. It
// never calls t.Log after the test ends (memberlist may log a little later).
func testLogger(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type member struct {
	name string
	g    *gossip.Gossip
	rec  *gossiptest.Recorder
	addr string
}

// start makes a member and runs it until the test ends.
func start(t *testing.T, cfg gossip.Config) *member {
	t.Helper()
	rec := &gossiptest.Recorder{}
	g, err := gossip.New(cfg, rec)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	return run(t, cfg.NodeName, g, rec)
}

func run(t *testing.T, name string, g *gossip.Gossip, rec *gossiptest.Recorder) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Logf("Run(%s): %v", name, err)
		}
		_ = g.Close()
	})
	return &member{name: name, g: g, rec: rec, addr: g.LocalNode().Addr.String()}
}

func join(t *testing.T, m *member, to ...*member) {
	t.Helper()
	var addrs []string
	for _, o := range to {
		addrs = append(addrs, o.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := m.g.Join(ctx, addrs); err != nil || n != len(addrs) {
		t.Fatalf("%s joins %v: %d, %v", m.name, addrs, n, err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// aliveNames returns the names of the members m sees alive.
func aliveNames(m *member) []string {
	var out []string
	for _, mem := range m.g.Members() {
		if mem.State == gossip.MemberAlive {
			out = append(out, mem.Name)
		}
	}
	return out
}

func seesAlive(m *member, names ...string) bool {
	return slices.Equal(aliveNames(m), names)
}

func endpoint(replica string, ip string, port uint16) gossip.EndpointEvent {
	return gossip.EndpointEvent{
		Type:      gossip.EndpointReady,
		Namespace: "default",
		Function:  "hello",
		Revision:  "hello-00001",
		Replica:   replica,
		IP:        netip.MustParseAddr(ip),
		Port:      port,
	}
}

// hasReady reports whether m's handler holds ep, broadcast by node.
func hasReady(m *member, ep gossip.EndpointEvent, node string) bool {
	got, ok := m.rec.Ready()[ep.Key()]
	return ok && got.Node == node && got.IP == ep.IP && got.Port == ep.Port
}

func holds(eps []gossip.EndpointEvent, key gossip.EndpointKey) bool {
	return slices.ContainsFunc(eps, func(e gossip.EndpointEvent) bool { return e.Key() == key })
}
