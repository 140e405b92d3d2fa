// Package autoscaling is the autoscaler's live runner: on the leader, every
// Tick, it reads the revisions, their traffic and the gateways' load, asks
// the decision core (autoscaler.Scaler) for every revision's scale, and
// writes the desired replica counts to the revisions' Scale objects, which
// the replica controller then makes true. It reads, decides and writes;
// every rule is the Scaler's.
package autoscaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// Config configures the runner.
type Config struct {
	// Tick is how often decisions are made: faster than Knative's 2s, as a
	// burst should not wait for capacity.
	Tick time.Duration
	// StatsMaxAge is how old a gateway's last report may be and still
	// count; a gateway that stopped reporting is ignored after it. It is
	// also how long an activation counts as a request in flight before
	// the reports show it (autoscaler.ScalerConfig.ActivationHold).
	StatsMaxAge time.Duration
	// Autoscaler is the decision core's configuration.
	Autoscaler autoscaler.Config
	// ProgressDeadline is how long a deploy's revision keeps its initial
	// scale while it has never had a Ready replica and so takes no
	// traffic (a missing image, a crash at start-up): after it, the
	// revision is given up and scaled to zero, as Knative's
	// progress-deadline does, and the traffic stays where it was.
	// Default (and when 0) 10m, Knative's.
	ProgressDeadline time.Duration
	// MaxReplicas is the cluster's bound on one revision's replicas
	// (autoscaler.ScalerConfig.MaxReplicas): what a function without a
	// maxScale of its own gets. Default (and when 0) the API's
	// MaxReplicas limit, which the server sets.
	MaxReplicas int
	// Manual turns the runner off: Scales change only when someone writes
	// them (tests of the controllers, operators debugging a revision).
	Manual bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Tick: time.Second, StatsMaxAge: 3 * time.Second, ProgressDeadline: 10 * time.Minute,
		Autoscaler: autoscaler.DefaultConfig()}
}

// validate reports every bad field of c at once; the Scaler's
// configuration, made from c, reports its own.
func (c Config) validate() error {
	var errs []error
	if c.Tick <= 0 {
		errs = append(errs, fmt.Errorf("%w: Tick = %v: must be positive", autoscaler.ErrInvalidConfig, c.Tick))
	}
	if c.StatsMaxAge <= 0 {
		errs = append(errs, fmt.Errorf("%w: StatsMaxAge = %v: must be positive", autoscaler.ErrInvalidConfig, c.StatsMaxAge))
	}
	return errors.Join(errs...)
}

// StatsSource gives the gateways' load to the runner.
type StatsSource interface {
	// Load returns every revision's demand over the last sample period,
	// summed over the gateways whose reports are fresh at now; a revision
	// missing from it had none. The runner calls it from its own
	// goroutine once per tick; it may block on I/O until ctx ends.
	Load(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error)
}

var _ StatsSource = (*store.GatewayLoad)(nil)

// StatsFunc is a function that is a StatsSource, for fakes in tests.
type StatsFunc func(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error)

// Load implements StatsSource.
func (f StatsFunc) Load(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error) {
	return f(ctx, now)
}

// Runner decides the scale of every revision while its Run is running.
type Runner struct {
	cfg     Config
	store   *store.Store
	stats   StatsSource
	clock   clock.Clock
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex // Activated comes from API handlers, Tick from Run
	scaler *autoscaler.Scaler
}

// New returns a runner that reads and writes the cluster's objects in st,
// the gateways' load from stats, and ticks on clk (nil: the wall clock);
// its metrics go to reg.
// It returns an error wrapping autoscaler.ErrInvalidConfig, naming every
// bad field, when cfg is invalid.
func New(cfg Config, st *store.Store, stats StatsSource, clk clock.Clock, log *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if cfg.ProgressDeadline <= 0 {
		cfg.ProgressDeadline = DefaultConfig().ProgressDeadline
	}
	scaler, err := autoscaler.NewScaler(autoscaler.ScalerConfig{
		Decider: cfg.Autoscaler, ProgressDeadline: cfg.ProgressDeadline, ActivationHold: cfg.StatsMaxAge,
		MaxReplicas: cfg.MaxReplicas,
	})
	if err := errors.Join(cfg.validate(), err); err != nil {
		return nil, fmt.Errorf("new autoscaling runner: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("new autoscaling runner: %w", err)
	}
	return &Runner{cfg: cfg, store: st, stats: stats, clock: clock.Or(clk), log: log.With("component", "autoscaler"),
		metrics: m, scaler: scaler}, nil
}

// Activated tells the runner that a gateway holds demand requests of
// revision rev that its replicas cannot take (at zero, or all at their
// limit), and returns the replicas they need at once
// (autoscaler.Scaler.Activate), for the API server to ask for without
// waiting for the next tick. The decision core counts that demand until
// the gateways' reports show it, so that it does not scale the revision
// straight back. It may be called from any goroutine and does not block
// on I/O.
func (r *Runner) Activated(rev *api.Revision, demand int32) int32 {
	r.mu.Lock()
	n, err := r.scaler.Activate(r.clock.Now(), rev, int(demand))
	r.mu.Unlock()
	if err != nil {
		r.log.Warn("activate", "revision", rev.Metadata.Name, "err", err)
		return 1
	}
	return n
}

// Run decides at once, then every Tick of the runner's clock, until ctx
// ends. It is a controllers.LeaderTask: a server that has just become the
// leader (its predecessor killed in the middle of a burst, say) decides
// without waiting a tick. When it returns (leadership lost) the per-revision
// gauges go, so that only the leader reports them.
func (r *Runner) Run(ctx context.Context) error {
	defer r.metrics.reset()
	if r.cfg.Manual {
		<-ctx.Done()
		return nil
	}
	var m mirror
	var wg sync.WaitGroup
	defer wg.Wait()
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() {
		m.run(mctx, r.store, r.clock, func(err error) { r.log.Warn("autoscaler's watch broke; reading again", "err", err) })
	})
	t := r.clock.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		// The first round reads etcd itself when the mirror has nothing yet.
		if err := r.tick(ctx, &m); err != nil && ctx.Err() == nil {
			r.log.Warn("autoscaler tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
	}
}

// Tick makes one round of decisions: read (listing etcd), decide, write.
// It is exported for tests; Run reads a mirror kept by a watch instead.
func (r *Runner) Tick(ctx context.Context) error { return r.tick(ctx, nil) }

// tick is one round of decisions on what m holds, or, while m has nothing
// yet (or is nil), on lists of etcd.
func (r *Runner) tick(ctx context.Context, m *mirror) error {
	now := r.clock.Now()
	in, err := r.read(ctx, now, m)
	if err != nil {
		return err
	}
	r.mu.Lock()
	res, decideErr := r.scaler.Decide(now, in)
	r.mu.Unlock()

	for _, k := range res.Gone {
		r.metrics.forget(k)
	}
	scales := make(map[api.Key]*api.Scale, len(in.Scales))
	for i := range in.Scales {
		scales[api.KeyOf(&in.Scales[i])] = &in.Scales[i]
	}
	errs := []error{decideErr}
	for _, d := range res.Revisions {
		sc := scales[d.Revision]
		mode := "stable"
		if d.Panic {
			mode = "panic"
		}
		r.metrics.observe(d.Revision.Namespace, d.Function, d.Revision.Name, d.Desired, sc.Status.ReadyReplicas, d.Panic, d.Load.Sample.Concurrency, d.Load.RPS, d.Reason)
		if err := r.write(ctx, sc, d.Desired, mode, d.StatusReason()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// read is one tick's view of the cluster: the load first, then the
// objects, from m when it has them, else listed, Functions before
// Traffic (see autoscaler.Input).
func (r *Runner) read(ctx context.Context, now time.Time, m *mirror) (autoscaler.Input, error) {
	load, err := r.stats.Load(ctx, now)
	if err != nil {
		return autoscaler.Input{}, err
	}
	if m != nil {
		if in, ok := m.input(); ok {
			in.Load = load
			return in, nil
		}
	}
	in := autoscaler.Input{Load: load}
	if in.Scales, _, err = store.List[api.Scale](ctx, r.store, store.Scope{}); err != nil {
		return in, err
	}
	if in.Revisions, _, err = store.List[api.Revision](ctx, r.store, store.Scope{}); err != nil {
		return in, err
	}
	if in.Functions, _, err = store.List[api.Function](ctx, r.store, store.Scope{}); err != nil {
		return in, err
	}
	if in.Traffic, _, err = store.List[api.Traffic](ctx, r.store, store.Scope{}); err != nil {
		return in, err
	}
	return in, nil
}

// write sets the Scale's desired count and the decision's mode and reason,
// each only when it changed.
func (r *Runner) write(ctx context.Context, sc *api.Scale, desired int32, mode, reason string) error {
	if sc.Spec.Replicas != desired {
		r.log.Info("scale", "revision", sc.Metadata.Name, "from", sc.Spec.Replicas, "to", desired, "reason", reason)
		out, err := store.SetScaleReplicas(ctx, r.store, api.KeyOf(sc), sc.Spec.Replicas, desired)
		if err != nil {
			if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrNotFound) {
				return nil // the count changed under us (an activation): decide again next tick
			}
			return err
		}
		*sc = *out
	}
	// The controllers write the same status (the replica counts) all the
	// time: a conflict reads the scale again and tries once more before
	// leaving it to the next tick.
	for attempt := 0; attempt < 2 && (sc.Status.Mode != mode || sc.Status.Reason != reason); attempt++ {
		next := *sc
		next.Status.Mode, next.Status.Reason = mode, reason
		_, err := store.UpdateScaleStatus(ctx, r.store, &next)
		switch {
		case err == nil, errors.Is(err, api.ErrNotFound):
			return nil
		case !errors.Is(err, api.ErrConflict):
			return err
		}
		if sc, err = store.Get[api.Scale](ctx, r.store, api.KeyOf(sc)); err != nil {
			if errors.Is(err, api.ErrNotFound) {
				return nil
			}
			return err
		}
	}
	return nil
}
