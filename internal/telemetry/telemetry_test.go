package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/internal/telemetry"
	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProcessRegistryPassesPromtool(t *testing.T) {
	reg := telemetry.NewProcessRegistry("v1.2.3")
	telemetrytest.Check(t, "the process registry", reg, "surge_build_info", "go_goroutines", "process_cpu_seconds_total")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "surge_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "v1.2.3" || !strings.HasPrefix(labels["goversion"], "go") || labels["revision"] == "" {
			t.Errorf("surge_build_info labels %v", labels)
		}
		if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 1 {
			t.Errorf("surge_build_info = %v, want 1", v)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7074": true, "[::1]:7074": true, "localhost:7074": true, "127.1.2.3:1": true,
		":7074": false, "0.0.0.0:7074": false, "[::]:7074": false, "10.0.0.1:7074": false,
		"example.com:7074": false, "no-port": false,
	} {
		if got := telemetry.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestHandlerNeedsATokenThatMayReadMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(telemetry.BuildInfo("v"))
	authz := func(_ context.Context, tok string) error {
		switch tok {
		case "good":
			return nil
		case "down":
			return errors.New("API unreachable")
		}
		return telemetry.ErrForbidden
	}
	srv := httptest.NewServer(telemetry.Handler(reg, authz))
	defer srv.Close()
	for _, tc := range []struct {
		header string
		code   int
	}{
		{"", http.StatusUnauthorized},
		{"Basic abc", http.StatusUnauthorized},
		{"Bearer bad", http.StatusUnauthorized},
		{"Bearer down", http.StatusServiceUnavailable},
		{"Bearer good", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%q: %d %s, want %d", tc.header, resp.StatusCode, body, tc.code)
		}
		if ok := strings.Contains(string(body), "surge_build_info"); ok != (tc.code == http.StatusOK) {
			t.Errorf("%q: metrics served = %v with status %d", tc.header, ok, resp.StatusCode)
		}
	}
}

func TestCachedAuthorizerAsksOncePerTTL(t *testing.T) {
	clk := clock.NewFake()
	var calls atomic.Int32
	failing := atomic.Bool{}
	a := telemetry.CachedAuthorizer(func(_ context.Context, tok string) error {
		calls.Add(1)
		if failing.Load() {
			return errors.New("API unreachable")
		}
		if tok == "good" {
			return nil
		}
		return telemetry.ErrForbidden
	}, clk, 10*time.Second)
	ctx := context.Background()
	for range 3 {
		if err := a(ctx, "good"); err != nil {
			t.Fatal(err)
		}
		if err := a(ctx, "bad"); !errors.Is(err, telemetry.ErrForbidden) {
			t.Fatalf("bad token: %v", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d checks for two tokens within the TTL, want 2", n)
	}
	clk.Advance(10 * time.Second)
	failing.Store(true)
	if err := a(ctx, "good"); err == nil || errors.Is(err, telemetry.ErrForbidden) {
		t.Errorf("after the TTL, with the API down: %v, want the check's error", err)
	}
	if err := a(ctx, "good"); err == nil {
		t.Error("a failed check was cached as a success")
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d checks, want 4: a failed check is not kept", n)
	}
}

func TestEndpointServesAndStops(t *testing.T) {
	reg := telemetry.NewProcessRegistry("v")
	e := telemetry.Endpoint{Addr: "127.0.0.1:0", Gatherer: reg}
	ln, err := e.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on loopback without a token: %s", resp.Status)
	}
	telemetrytest.CheckText(t, "the endpoint", body)
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if _, err := (telemetry.Endpoint{Addr: "0.0.0.0:0", Gatherer: reg}).Listen(); err == nil {
		t.Error("an endpoint off loopback without an Authorizer listened")
	}
}
