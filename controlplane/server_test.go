package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// TestServerRunsOnItsClock: the server's one clock stamps objects and
// tokens, and drives the controllers: a node is declared dead when the
// clock, not the wall clock, passes its timeout.
func TestServerRunsOnItsClock(t *testing.T) {
	// At the wall clock's now: the server's certificates are made on this
	// clock, and the client checks them on the wall clock.
	clk := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) {
		c.Clock = clk
		c.Autoscaling.Manual = true
		c.Controllers.NodeTimeout, c.Controllers.Resync = 30*time.Second, time.Minute
		c.Controllers.Debounce = 0 // the debounce waits on the clock too
	})
	c := in.Client()
	ctx := context.Background()
	start := clk.Now().UTC()

	f, err := c.PutFunction(ctx, hello("example.test/hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Metadata.CreationTimestamp.Equal(start) {
		t.Errorf("function created at %v, want the clock's %v", f.Metadata.CreationTimestamp, start)
	}
	var toks api.List[auth.Token]
	if err := c.Do(ctx, "GET", "/v1/tokens", nil, &toks); err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks.Items {
		if !tok.Created.Equal(start) {
			t.Errorf("token %s (%s) created at %v, want the clock's %v", tok.ID, tok.Description, tok.Created, start)
		}
	}

	registerNode(t, c, "node-a", start)
	waitFor(t, in, "a replica on node-a", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		return len(reps) == 1 && reps[0].Spec.NodeName == "node-a", fmt.Sprint(reps)
	})
	registerNode(t, c, "node-b", start.Add(time.Hour))
	// Only the clock moves: the resync tick finds node-a stale.
	clk.Advance(time.Minute)
	waitFor(t, in, "node-a dead and its replica replaced on node-b", func() (bool, string) {
		n, err := client.Get[api.Node](ctx, c, api.Key{Name: "node-a"})
		if err != nil {
			return false, err.Error()
		}
		reps := replicasOf(t, c, "hello")
		return n.Status.State == api.NodeDead && len(reps) == 1 && reps[0].Spec.NodeName == "node-b",
			fmt.Sprintf("node-a %s, replicas %v", n.Status.State, reps)
	})
}

// TestServerMetricsGoToItsRegisterer: the API's and the autoscaler's
// metrics go to the configured registry, and /metrics serves that registry.
func TestServerMetricsGoToItsRegisterer(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Registerer = reg })
	c := in.Client()
	if _, err := client.List[api.Function](context.Background(), c, "default", nil); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range families {
		have[mf.GetName()] = true
	}
	if !have["surge_apiserver_requests_total"] {
		t.Errorf("registry has %v, want the API's request counter", have)
	}

	body, err := c.Open(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "surge_apiserver_requests_total") {
		t.Errorf("/metrics lacks the API's request counter:\n%s", b)
	}
	// The Go collector is the private registry's; this one has none.
	if strings.Contains(string(b), "go_goroutines") {
		t.Errorf("/metrics serves another registry than the configured one")
	}
}

// TestServerMetricsPrivateByDefault: with no Registerer, /metrics serves a
// registry of the server's own, with the Go and process collectors.
func TestServerMetricsPrivateByDefault(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	if _, err := client.List[api.Function](context.Background(), c, "default", nil); err != nil {
		t.Fatal(err)
	}
	body, err := c.Open(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"go_goroutines", "surge_apiserver_requests_total"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestRunStopsWhatItStartedWhenAStepFails: the API address is taken; Run
// fails at that step, naming the flag, and stops etcd, which it had
// started (the leak check of TestMain sees anything left running).
func TestRunStopsWhatItStartedWhenAStepFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := controlplane.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.APIAddr = taken.Addr().String()
	cfg.EtcdClientAddr = controlplanetest.FreePort(t)
	cfg.EtcdPeerAddr = controlplanetest.FreePort(t)
	cfg.Name, cfg.WriteUserConfig = "test", false
	srv, err := controlplane.New(cfg, slog.New(slog.DiscardHandler), "test")
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--api-addr") {
		t.Fatalf("Run = %v, want an error naming --api-addr", err)
	}
	select {
	case <-srv.Ready():
		t.Error("Ready is closed though the server never served")
	default:
	}
}

func TestConfigValidateReportsEveryBadField(t *testing.T) {
	cfg := controlplane.DefaultConfig()
	cfg.DataDir = "relative"
	cfg.APIAddr = "no-port"
	cfg.EtcdEndpoints = []string{"10.0.0.1:2379"}
	cfg.PodCIDR = "fd00::/64"
	cfg.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"a": "b"}, prometheus.NewRegistry())
	err := cfg.Validate()
	for _, want := range []string{"--data-dir", "--api-addr", "--etcd-endpoints", "--pod-cidr", "Registerer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want an error naming %s", err, want)
		}
	}
	if err := controlplane.DefaultConfig().Validate(); err != nil {
		t.Errorf("the default config is invalid: %v", err)
	}
	if _, err := controlplane.New(cfg, slog.New(slog.DiscardHandler), "test"); err == nil {
		t.Error("New accepted an invalid config")
	}
}
