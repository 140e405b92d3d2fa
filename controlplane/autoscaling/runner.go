// Package autoscaling is the autoscaler's live runner: on the leader, every
// second, it sums the gateways' latest load reports per revision, feeds them
// to each revision's decision core (package autoscaler), and writes the
// desired replica counts to the revisions' Scale objects, which the replica
// controller then makes true.
package autoscaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane/store"
)

// Config configures the runner.
type Config struct {
	// Tick is how often decisions are made: faster than Knative's 2s, as a
	// burst should not wait for capacity.
	Tick time.Duration
	// StatsMaxAge is how old a gateway's last report may be and still
	// count; a gateway that stopped reporting is ignored after it.
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
	// Manual turns the runner off: Scales change only when someone writes
	// them (tests of the controllers, operators debugging a revision).
	Manual bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Tick: time.Second, StatsMaxAge: 3 * time.Second, ProgressDeadline: 10 * time.Minute,
		Autoscaler: autoscaler.DefaultConfig()}
}

// Runner decides the scale of every revision while its Run is running.
type Runner struct {
	cfg     Config
	store   *store.Store
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	mu        sync.Mutex
	deciders  map[string]*decider // "ns/revision"
	activated map[string]time.Time
}

type decider struct {
	d *autoscaler.Decider
}

// New returns a runner; its metrics go to reg.
func New(cfg Config, st *store.Store, log *slog.Logger, now func() time.Time, reg prometheus.Registerer) (*Runner, error) {
	if err := cfg.Autoscaler.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.ProgressDeadline <= 0 {
		cfg.ProgressDeadline = DefaultConfig().ProgressDeadline
	}
	return &Runner{cfg: cfg, store: st, log: log.With("component", "autoscaler"), now: now, metrics: m,
		deciders: map[string]*decider{}, activated: map[string]time.Time{}}, nil
}

// Activated tells the runner that a request raised a revision from zero,
// so that the decision core counts that demand before the gateways' next
// report and does not scale the revision straight back to zero. It may be
// called from any goroutine.
func (r *Runner) Activated(namespace, revision string) {
	r.mu.Lock()
	r.activated[namespace+"/"+revision] = r.now()
	r.mu.Unlock()
}

// Run decides every Tick until ctx ends. It is a controllers.LeaderTask.
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Manual {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("autoscaler tick", "err", err)
		}
	}
}

// PolicyFor turns a revision's scaling spec into the decision core's policy.
func PolicyFor(t *api.FunctionSpec) autoscaler.Policy {
	p := autoscaler.Policy{
		MinReplicas:          int(t.Scaling.MinScale),
		MaxReplicas:          int(t.Scaling.MaxScale),
		ContainerConcurrency: int(t.Concurrency),
		KeepAlive:            autoscaler.KeepAliveAdaptive,
	}
	metric := autoscaler.MetricConcurrency
	if t.Scaling.Metric == api.MetricRPS {
		metric = autoscaler.MetricRPS
	}
	p.Targets = []autoscaler.Target{{Metric: metric, Value: t.Scaling.Target}}
	if d, err := time.ParseDuration(t.Scaling.StableWindow); err == nil && d > 0 {
		p.StableWindow = d
	}
	if d, err := time.ParseDuration(t.Scaling.ScaleToZeroGrace); err == nil && d > 0 {
		p.ScaleToZeroGrace = d
		// An explicit grace is a fixed keep-alive: the user asked for it.
		p.KeepAlive = autoscaler.KeepAliveFixed
	}
	return p
}

// load is one revision's demand, summed over the gateways.
type load struct {
	sample autoscaler.Sample
	rps    float64
}

// readStats sums the fresh gateway reports per "ns/revision".
func (r *Runner) readStats(ctx context.Context, now time.Time) (map[string]load, error) {
	resp, err := r.store.Client().Get(ctx, store.StatsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read gateway stats: %w", err)
	}
	out := map[string]load{}
	for _, kv := range resp.Kvs {
		var gs api.GatewayStats
		if err := json.Unmarshal(kv.Value, &gs); err != nil {
			continue
		}
		if now.Sub(gs.At) > r.cfg.StatsMaxAge {
			continue
		}
		window, err := time.ParseDuration(gs.Window)
		if err != nil || window <= 0 {
			window = time.Second
		}
		for _, l := range gs.Revisions {
			k := l.Namespace + "/" + l.Revision
			v := out[k]
			// The gateway's average includes queued requests already.
			v.sample.Concurrency += l.Concurrency
			v.sample.Requests += float64(l.Requests)
			v.rps += float64(l.Requests) / window.Seconds()
			out[k] = v
		}
	}
	return out, nil
}

// Tick makes one round of decisions. It is exported for tests.
func (r *Runner) Tick(ctx context.Context) error {
	now := r.now()
	stats, err := r.readStats(ctx, now)
	if err != nil {
		return err
	}
	scales, _, err := store.List[api.Scale](ctx, r.store, store.Scales, store.Scales.Prefix(""))
	if err != nil {
		return err
	}
	revs, _, err := store.List[api.Revision](ctx, r.store, store.Revisions, store.Revisions.Prefix(""))
	if err != nil {
		return err
	}
	// Functions before Traffic: a rollout that ends between the two reads
	// then leaves its revision rolling out or serving, never neither (which
	// would read as "no traffic" and scale it to zero).
	fns, _, err := store.List[api.Function](ctx, r.store, store.Functions, store.Functions.Prefix(""))
	if err != nil {
		return err
	}
	traffic, _, err := store.List[api.Traffic](ctx, r.store, store.Traffics, store.Traffics.Prefix(""))
	if err != nil {
		return err
	}
	// rollingOut: each function's latest revision while it has never had
	// a Ready replica; the rollout controller gives it the traffic then.
	rollingOut := map[string]bool{}
	for _, f := range fns {
		if latest := f.Status.LatestRevision; latest != "" && latest != f.Status.LatestReadyRevision {
			rollingOut[f.Metadata.Namespace+"/"+latest] = true
		}
	}
	revByKey := make(map[string]*api.Revision, len(revs))
	for i := range revs {
		revByKey[revs[i].Metadata.Namespace+"/"+revs[i].Metadata.Name] = &revs[i]
	}
	serving := map[string]bool{}
	for _, t := range traffic {
		for _, tt := range t.Spec.Targets {
			if tt.Percent > 0 {
				serving[t.Metadata.Namespace+"/"+tt.Revision] = true
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var errs []error
	for i := range scales {
		sc := &scales[i]
		k := sc.Metadata.Namespace + "/" + sc.Metadata.Name
		rev := revByKey[k]
		if rev == nil {
			continue
		}
		seen[k] = true
		d, err := r.deciderFor(k, rev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l := stats[k]
		if at, ok := r.activated[k]; ok && now.Sub(at) < r.cfg.StatsMaxAge && l.sample.Concurrency == 0 {
			// A request is waiting for this revision's first replica; the
			// gateways' reports have not caught up yet.
			l.sample.Concurrency, l.sample.Requests = 1, 1
		}
		d.d.Record(now, l.sample)
		dec := d.d.Scale(now, int(sc.Status.ReadyReplicas))
		desired, reason := int32(dec.Desired), dec.Reason.String()
		initial, age := api.InitialScale(&rev.Spec.Template), now.Sub(rev.Metadata.CreationTimestamp)
		if desired < initial && serving[k] && age < r.window(rev) {
			// A new revision keeps its initial scale for one stable window,
			// as Knative's does: long enough to become Ready and take its
			// first requests, rather than being judged idle before it ran.
			desired, reason = initial, "initial scale"
		}
		switch {
		case rollingOut[k] && !serving[k] && age < r.cfg.ProgressDeadline:
			// A deploy's revision keeps its initial scale until a replica
			// is Ready and the traffic moves to it.
			desired, reason = max(desired, initial), "rolling out"
		case rollingOut[k] && !serving[k]:
			desired, reason = 0, fmt.Sprintf("not ready in %s", r.cfg.ProgressDeadline)
		case !serving[k] && l.sample.Concurrency == 0 && l.sample.Requests == 0:
			// A revision that gets no traffic any more drains to zero once
			// its last requests are done, whatever its policy says.
			desired, reason = 0, "no traffic"
		}
		mode := "stable"
		if dec.Panic {
			mode = "panic"
		}
		r.metrics.observe(sc.Metadata.Namespace, rev.Spec.Function, sc.Metadata.Name, desired, sc.Status.ReadyReplicas, dec.Panic, l.sample.Concurrency, l.rps)
		if err := r.write(ctx, sc, desired, mode, reason); err != nil {
			errs = append(errs, err)
		}
	}
	for k := range r.deciders {
		if !seen[k] {
			delete(r.deciders, k)
			delete(r.activated, k)
			r.metrics.forget(k)
		}
	}
	return errors.Join(errs...)
}

// window is the revision's effective stable window.
func (r *Runner) window(rev *api.Revision) time.Duration {
	if d, err := time.ParseDuration(rev.Spec.Template.Scaling.StableWindow); err == nil && d > 0 {
		return d
	}
	return r.cfg.Autoscaler.StableWindow
}

func (r *Runner) deciderFor(k string, rev *api.Revision) (*decider, error) {
	p := PolicyFor(&rev.Spec.Template)
	d, ok := r.deciders[k]
	if ok {
		return d, nil
	}
	ad, err := autoscaler.NewDecider(r.cfg.Autoscaler, p)
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", k, err)
	}
	d = &decider{d: ad}
	r.deciders[k] = d
	return d, nil
}

// write sets the Scale's desired count and the decision's mode and reason,
// each only when it changed.
func (r *Runner) write(ctx context.Context, sc *api.Scale, desired int32, mode, reason string) error {
	if sc.Spec.Replicas != desired {
		r.log.Info("scale", "revision", sc.Metadata.Name, "from", sc.Spec.Replicas, "to", desired, "reason", reason)
		out, err := store.SetScaleReplicas(ctx, r.store, sc.Metadata.Namespace, sc.Metadata.Name, sc.Spec.Replicas, desired)
		if err != nil {
			if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrNotFound) {
				return nil // the count changed under us (an activation): decide again next tick
			}
			return err
		}
		*sc = *out
	}
	if sc.Status.Mode != mode || sc.Status.Reason != reason {
		next := *sc
		next.Status.Mode, next.Status.Reason = mode, reason
		if _, err := store.UpdateScaleStatus(ctx, r.store, &next); err != nil &&
			!errors.Is(err, api.ErrConflict) && !errors.Is(err, api.ErrNotFound) {
			return err
		}
	}
	return nil
}
