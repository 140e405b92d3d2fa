package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/canary"
	"github.com/surgeplatform/surge/controlplane/store"
)

// The rollout controller has two halves. The pass (rollouts, in
// manager.go) starts a rollout when a deploy's revision gets its first
// Ready replica (store.PromoteRevision): all the traffic at once, or a
// canary's first step. The canary loop here takes a canary on from there,
// every RolloutTick while this server leads: it reads the rollouts in
// progress and the gateways' counters of their revisions' outcomes, asks
// the pure core (package canary) what to do, and writes it — the next
// step, success, or a rollback with its reason — with the traffic, in one
// transaction (store.WriteRollout). Its state is the rollouts in etcd; a
// new leader carries them on where they are, counting the evidence of the
// step in progress from when it took over.

// OutcomeSource gives the gateways' counters of the revisions' outcomes
// (store.GatewayLoad). It is called from the canary loop's goroutine and
// may block on I/O until ctx ends.
type OutcomeSource interface {
	Outcomes(ctx context.Context, now time.Time) (map[string]map[api.Key]api.Outcomes, error)
}

var _ OutcomeSource = (*store.GatewayLoad)(nil)

// canaries runs canaryPass every RolloutTick until ctx ends.
func (m *Manager) canaries(ctx context.Context) error {
	ev := newEvidence()
	t := m.clock.NewTicker(m.cfg.RolloutTick)
	defer t.Stop()
	for {
		if err := m.canaryPass(ctx, ev); err != nil && ctx.Err() == nil {
			m.log.Warn("canary pass failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
	}
}

// CanaryPass runs the canary loop's pass once, as the loop does within one
// leadership term: the evidence carries over from the last CanaryPass.
// ForgetEvidence starts a new term's. Both are for tests, and must not be
// called while Run leads.
func (m *Manager) CanaryPass(ctx context.Context) error {
	if m.testEvidence == nil {
		m.testEvidence = newEvidence()
	}
	return m.canaryPass(ctx, m.testEvidence)
}

// ForgetEvidence drops what CanaryPass counted, as a new leader starts
// with nothing; see CanaryPass.
func (m *Manager) ForgetEvidence() { m.testEvidence = nil }

// canaryPass judges every canary in progress once. While the passes see
// none, it reads nothing: listing every function's rollout each second
// would cost a busy cluster as much as listing its functions.
func (m *Manager) canaryPass(ctx context.Context, ev *evidence) error {
	if !m.canariesLive.Load() {
		ev.reset()
		return nil
	}
	rollouts, _, err := store.List[api.Rollout](ctx, m.store, store.Scope{})
	if err != nil {
		return err
	}
	var live []*api.Rollout
	wanted := map[api.Key]bool{}
	for i := range rollouts {
		ro := &rollouts[i]
		if ro.Status.Phase != api.RolloutProgressing || ro.Spec.Canary == nil {
			continue
		}
		live = append(live, ro)
		wanted[api.Key{Namespace: ro.Metadata.Namespace, Name: ro.Spec.Revision}] = true
		wanted[api.Key{Namespace: ro.Metadata.Namespace, Name: ro.Spec.From}] = true
	}
	if len(live) == 0 {
		ev.reset()
		return nil
	}
	now := m.clock.Now()
	reports, err := m.outcomes.Outcomes(ctx, now)
	if err != nil {
		return err
	}
	ev.observe(reports, wanted)
	var errs []error
	keep := map[api.Key]bool{}
	for _, ro := range live {
		keep[api.KeyOf(ro)] = true
		if err := m.judge(ctx, ro, ev, now); err != nil && !benign(err) {
			errs = append(errs, err)
		}
	}
	ev.forget(keep)
	return errors.Join(errs...)
}

// judge acts on one canary in progress: it is aborted if someone set its
// function's traffic by hand since its last step, else it does what
// canary.Decide says on ev's evidence of its step.
func (m *Manager) judge(ctx context.Context, ro *api.Rollout, ev *evidence, now time.Time) error {
	key := api.KeyOf(ro)
	t, err := store.Get[api.Traffic](ctx, m.store, key)
	if err != nil {
		return err
	}
	next := *ro
	next.Status.Analysis = nil
	log := m.log.With("function", key.Name, "namespace", key.Namespace, "revision", ro.Spec.Revision, "from", ro.Spec.From)
	if !api.SameShares(t, ro.Shares()) {
		next.Status.Phase, next.Status.Finished = api.RolloutAborted, now.UTC()
		next.Status.Reason = "the traffic was set by hand while the canary progressed: it stays as set"
		_, err := m.store.WriteRollout(ctx, &next, nil)
		if err == nil {
			log.Info("canary aborted: traffic set by hand")
		}
		return err
	}
	d := canary.Decide(now, ro, ev.of(ro, now))
	if d.Action == canary.Wait {
		return nil
	}
	analysis := d.Analysis
	next.Status.Analysis = &analysis
	shares := map[string]int32{}
	switch d.Action {
	case canary.RollBack:
		next.Status.Phase, next.Status.Finished, next.Status.Reason = api.RolloutRolledBack, now.UTC(), d.Reason
		shares[ro.Spec.From] = 100
	case canary.Advance:
		next.Status.Step, next.Status.Percent, next.Status.StepStarted = d.Step, d.Percent, now.UTC()
		if d.Reason != "" {
			next.Status.Reason = d.Reason
		}
		if d.Percent >= 100 {
			next.Status.Phase, next.Status.Finished = api.RolloutSucceeded, now.UTC()
		}
		shares = next.Shares()
	}
	nt := *t
	nt.Spec.Targets = api.Split(t, shares)
	if _, err := m.store.WriteRollout(ctx, &next, &nt); err != nil {
		return fmt.Errorf("rollout of %s: %w", key, err)
	}
	ev.mark(&next, now) // the new step counts from now
	h := analysis.Canary
	switch {
	case d.Action == canary.RollBack:
		log.Warn("canary rolled back", "reason", d.Reason)
	case next.Status.Phase == api.RolloutSucceeded:
		log.Info("canary succeeded", "requests", h.Requests, "errors", h.Errors, "p99", h.P99.Duration)
	default:
		log.Info("canary step", "percent", d.Percent, "requests", h.Requests, "errors", h.Errors, "p99", h.P99.Duration, "note", d.Reason)
	}
	return nil
}

// evidence sums what the gateways report of the revisions in canaries,
// from one canary pass to the next: each gateway's cumulative counters are
// differenced from the last report of it this leader saw
// (api.Outcomes.Since), and each canary's step counts from a mark taken
// when this leader first saw the step. Only the canary loop's goroutine
// uses it.
type evidence struct {
	last  map[string]map[api.Key]api.Outcomes // by gateway, then revision
	total map[api.Key]api.Outcomes            // by revision, since first seen
	marks map[api.Key]stepMark                // by function
	// wanted is the revisions the last pass observed.
	wanted map[api.Key]bool
}

// stepMark is where a canary's step began counting.
type stepMark struct {
	step             string
	since            time.Time
	canary, baseline api.Outcomes
}

func newEvidence() *evidence {
	e := &evidence{}
	e.reset()
	return e
}

// reset forgets everything, while no canary is in progress.
func (e *evidence) reset() {
	e.last = map[string]map[api.Key]api.Outcomes{}
	e.total = map[api.Key]api.Outcomes{}
	e.marks = map[api.Key]stepMark{}
	e.wanted = map[api.Key]bool{}
}

// observe adds what the reports counted of the wanted revisions since the
// last reports seen of the same gateways. The first sight of a revision at
// a gateway only sets where it starts — unless the last pass watched that
// revision at that gateway already: a gateway reports every revision it
// counted a request of, so one it left out had none, and all it counts
// now is new (a canary's first requests).
func (e *evidence) observe(reports map[string]map[api.Key]api.Outcomes, wanted map[api.Key]bool) {
	for gw, revs := range reports {
		last, known := e.last[gw]
		if !known {
			last = map[api.Key]api.Outcomes{}
			e.last[gw] = last
		}
		for k, o := range revs {
			if !wanted[k] {
				continue
			}
			prev, ok := last[k]
			if ok || (known && e.wanted[k]) {
				t := e.total[k].Clone()
				t.Merge(o.Since(prev))
				e.total[k] = t
			}
			last[k] = o
		}
	}
	e.wanted = wanted
}

// of is the evidence of ro's current step: what was counted since its
// mark, taken now if this is the first look at the step.
func (e *evidence) of(ro *api.Rollout, now time.Time) canary.Evidence {
	ns := ro.Metadata.Namespace
	ck, bk := api.Key{Namespace: ns, Name: ro.Spec.Revision}, api.Key{Namespace: ns, Name: ro.Spec.From}
	m, ok := e.marks[api.KeyOf(ro)]
	if !ok || m.step != stepID(ro) {
		m = e.mark(ro, now)
	}
	return canary.Evidence{Since: m.since, Canary: e.total[ck].Since(m.canary), Baseline: e.total[bk].Since(m.baseline)}
}

// mark starts counting ro's current step at now.
func (e *evidence) mark(ro *api.Rollout, now time.Time) stepMark {
	ns := ro.Metadata.Namespace
	m := stepMark{step: stepID(ro), since: now,
		canary:   e.total[api.Key{Namespace: ns, Name: ro.Spec.Revision}].Clone(),
		baseline: e.total[api.Key{Namespace: ns, Name: ro.Spec.From}].Clone()}
	e.marks[api.KeyOf(ro)] = m
	return m
}

// stepID names a rollout's step: its revision, index and start.
func stepID(ro *api.Rollout) string {
	return fmt.Sprintf("%s/%d/%d", ro.Spec.Revision, ro.Status.Step, ro.Status.StepStarted.UnixNano())
}

// forget drops the marks of rollouts no longer in progress.
func (e *evidence) forget(keep map[api.Key]bool) {
	for k := range e.marks {
		if !keep[k] {
			delete(e.marks, k)
		}
	}
}
