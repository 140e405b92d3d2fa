package autoscaling_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/autoscaling"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

// manual turns off the server's own autoscaler, so that the runner a test
// drives with its own clock is the only writer of desired counts.
func manual(c *controlplane.Config) { c.Autoscaling.Manual = true }

// fakeAt returns a fake clock reading t. The API server stamps objects and
// gateway reports with the wall clock, so a runner that reads them starts
// its clock at a wall-clock time; from there it moves only by hand.
func fakeAt(t time.Time) *clock.Fake { return clockwork.NewFakeClockAt(t) }

// newRunner returns a runner on in's store and gateway reports, ticking on
// clk.
func newRunner(t *testing.T, in *controlplanetest.Instance, clk clock.Clock) *autoscaling.Runner {
	t.Helper()
	cfg := autoscaling.DefaultConfig()
	r, err := autoscaling.New(cfg, in.Store(), store.NewGatewayLoad(in.Store(), cfg.StatsMaxAge), clk,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunnerScalesWithGatewayLoadAndToZero(t *testing.T) {
	in := controlplanetest.StartWith(t, manual) // this test's runner is the only one
	c := in.Client()
	gw := in.ClientWithToken(in.Server().GatewayToken())
	ctx := context.Background()

	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1", Concurrency: 1}}
	fn.Spec.Scaling.ScaleToZeroGrace = api.Seconds(30)
	if _, err := c.PutFunction(ctx, fn); err != nil {
		t.Fatal(err)
	}
	clk := fakeAt(time.Now())
	r := newRunner(t, in, clk)
	report := func(concurrency float64, requests int64) {
		t.Helper()
		st := api.GatewayStats{Gateway: "gw-1", Window: api.Seconds(1), Revisions: []api.RevisionLoad{{
			Namespace: "default", Function: "hello", Revision: "hello-00001", Concurrency: concurrency, Requests: requests,
		}}}
		if err := gw.Do(ctx, "POST", "/v1/stats", &st, nil); err != nil {
			t.Fatalf("report stats: %v", err)
		}
	}
	desired := func() int32 {
		t.Helper()
		sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
		if err != nil {
			t.Fatal(err)
		}
		return sc.Spec.Replicas
	}

	// 10 requests in flight at a limit of 1 per replica: well over one replica.
	for range 3 {
		report(10, 50)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if got := desired(); got < 10 {
		t.Fatalf("desired %d under 10 in flight at concurrency 1, want at least 10", got)
	}
	sc, _ := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
	if sc.Status.Reason == "" || sc.Status.Mode == "" {
		t.Errorf("scale status has no mode/reason: %+v", sc.Status)
	}

	// Idle: the reports age out; after the stable window and the grace, zero.
	for i := 0; i < 200 && desired() > 0; i++ {
		clk.Advance(time.Second)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := desired(); got != 0 {
		t.Fatalf("after 200 idle seconds desired is %d, want 0", got)
	}

	// From zero: an activation raises it to one, and the next tick keeps it.
	var act struct{ Activated bool }
	if err := gw.Do(ctx, "POST", client.ObjectPath[api.Scale](api.Key{Namespace: "default", Name: "hello-00001"})+"/activate", nil, &act); err != nil || !act.Activated {
		t.Fatalf("activate: %+v, %v", act, err)
	}
	rev, err := client.Get[api.Revision](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	// One request at 0.7 per replica: two.
	if n := r.Activated(rev, 1); n != 2 {
		t.Errorf("an activation for one request asks for %d replicas, want 2", n)
	}
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	// At least one: PanicScaleUp may add spares for more requests like it.
	if got := desired(); got < 1 {
		t.Errorf("after activation and a tick desired is %d, want at least 1", got)
	}
	// A burst: 14 requests at concurrency 1 (0.7 per replica) need 20
	// replicas at once, and the next tick does not ask for fewer.
	if n := r.Activated(rev, 14); n != 20 {
		t.Errorf("an activation for 14 requests asks for %d replicas, want 20", n)
	}
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := desired(); got < 20 {
		t.Errorf("after an activation for 14 and a tick desired is %d, want at least 20", got)
	}
}

func TestRevisionWithoutTrafficDrainsToZero(t *testing.T) {
	in := controlplanetest.StartWith(t, manual) // this test's runner is the only one
	c := in.Client()
	ctx := context.Background()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	fn.Spec.Scaling.MinScale = 1
	for _, img := range []string{"example.test/hello:v1", "example.test/hello:v2"} {
		fn.Spec.Image = img
		if _, err := c.PutFunction(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	clk := fakeAt(time.Now())
	r := newRunner(t, in, clk)
	expect := func(when string, want map[string]int32, reasons map[string]string) {
		t.Helper()
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		for rev, n := range want {
			sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: rev})
			if err != nil {
				t.Fatal(err)
			}
			if sc.Spec.Replicas != n || (reasons[rev] != "" && sc.Status.Reason != reasons[rev]) {
				t.Errorf("%s: %s desired %d (%s), want %d (%s)", when, rev, sc.Spec.Replicas, sc.Status.Reason, n, reasons[rev])
			}
		}
	}
	// Until hello-00002 has a Ready replica the traffic stays on
	// hello-00001, and both keep a replica.
	expect("rolling out", map[string]int32{"hello-00001": 1, "hello-00002": 1}, map[string]string{"hello-00002": "rolling out"})

	// The rollout ends: hello-00001 gets no traffic and drains to zero.
	if moved, err := in.Store().PromoteRevision(ctx, api.Key{Namespace: "default", Name: "hello"}, "hello-00002"); err != nil || !moved {
		t.Fatalf("promote hello-00002: moved %v, %v", moved, err)
	}
	expect("rolled out", map[string]int32{"hello-00001": 0, "hello-00002": 1}, map[string]string{"hello-00001": "no traffic"})

	// A revision that is never Ready is given up after the progress
	// deadline; the one serving keeps its replica.
	fn.Spec.Image = "example.test/hello:broken"
	if _, err := c.PutFunction(ctx, fn); err != nil {
		t.Fatal(err)
	}
	expect("broken, rolling out", map[string]int32{"hello-00002": 1, "hello-00003": 1}, nil)
	clk.Advance(autoscaling.DefaultConfig().ProgressDeadline + time.Second)
	expect("broken, past the deadline", map[string]int32{"hello-00002": 1, "hello-00003": 0}, map[string]string{"hello-00003": "not ready in 10m0s"})
}

func TestNewRevisionKeepsItsInitialScaleForAWindow(t *testing.T) {
	in := controlplanetest.StartWith(t, manual) // this test's runner is the only one
	c := in.Client()
	ctx := context.Background()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	fn.Spec.Scaling.StableWindow = api.Seconds(10)
	f, err := c.PutFunction(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeAt(f.Metadata.CreationTimestamp)
	r := newRunner(t, in, clk)
	desired := func() int32 {
		sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
		if err != nil {
			t.Fatal(err)
		}
		return sc.Spec.Replicas
	}
	// Never used, within its first window: it keeps the one replica.
	for range 5 {
		clk.Advance(time.Second)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := desired(); got != 1 {
		t.Fatalf("a 5s-old revision was scaled to %d, want its initial 1", got)
	}
	// Long after, still unused: zero.
	for range 120 {
		clk.Advance(time.Second)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := desired(); got != 0 {
		t.Errorf("an idle revision 2 minutes old has %d replicas, want 0", got)
	}
}

func TestRunDecidesAtOnceThenOnEveryTickOfItsClock(t *testing.T) {
	in := controlplanetest.StartWith(t, manual) // this test's runner is the only one
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	f, err := in.Client().PutFunction(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeAt(f.Metadata.CreationTimestamp)
	start := clk.Now()
	// Each tick reads the load first: the source hands the tick's time to
	// the test and so marks where the runner is.
	ticks := make(chan time.Time)
	stats := autoscaling.StatsFunc(func(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error) {
		select {
		case ticks <- now:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	cfg := autoscaling.DefaultConfig()
	reg := prometheus.NewRegistry()
	r, err := autoscaling.New(cfg, in.Store(), stats, clk, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	tick := func(n int) {
		t.Helper()
		select {
		case now := <-ticks:
			if want := start.Add(time.Duration(n) * cfg.Tick); !now.Equal(want) {
				t.Errorf("tick %d decided at %v, want %v", n, now, want)
			}
		case err := <-done:
			t.Fatalf("Run returned before tick %d: %v", n, err)
		}
	}

	// At once: a new leader decides without waiting a tick.
	tick(0)
	if err := clk.BlockUntilContext(ctx, 1); err != nil { // the ticker
		t.Fatal(err)
	}
	clk.Advance(cfg.Tick)
	tick(1) // it decides as the first did, so it writes nothing
	// The next tick waits in the ticker until this one is written.
	clk.Advance(cfg.Tick)
	tick(2)
	sc, err := client.Get[api.Scale](ctx, in.Client(), api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Spec.Replicas != 1 || sc.Status.Mode != "stable" || sc.Status.Reason != "initial scale" {
		t.Errorf("after the first tick the scale is %d (%s, %s), want 1 (stable, initial scale)", sc.Spec.Replicas, sc.Status.Mode, sc.Status.Reason)
	}
	if n, err := testutil.GatherAndCount(reg, "surge_autoscaler_desired_replicas"); err != nil || n != 1 {
		t.Errorf("while leading: %d desired-replicas series (%v), want the revision's", n, err)
	}
	telemetrytest.Check(t, "the autoscaler's registry", reg, "surge_autoscaler_desired_replicas", "surge_autoscaler_ready_replicas",
		"surge_autoscaler_panic_mode", "surge_autoscaler_observed_concurrency", "surge_autoscaler_observed_requests_per_second",
		"surge_autoscaler_decisions_total")

	// Run ends as leadership does: only the leader reports decisions.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v after its context ended, want nil", err)
	}
	if n, err := testutil.GatherAndCount(reg, "surge_autoscaler_desired_replicas", "surge_autoscaler_ready_replicas",
		"surge_autoscaler_panic_mode", "surge_autoscaler_observed_concurrency", "surge_autoscaler_observed_requests_per_second"); err != nil || n != 0 {
		t.Errorf("after leadership ended: %d per-revision series (%v), want none", n, err)
	}
}

func TestNewReportsEveryBadField(t *testing.T) {
	cfg := autoscaling.DefaultConfig()
	cfg.Tick, cfg.StatsMaxAge, cfg.Autoscaler.StableWindow = 0, -time.Second, 0
	_, err := autoscaling.New(cfg, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if !errors.Is(err, autoscaler.ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
	for _, field := range []string{"Tick", "StatsMaxAge", "StableWindow"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}
