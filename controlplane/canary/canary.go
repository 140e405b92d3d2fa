// Package canary is the rollout controller's decision core: given a canary
// rollout in progress, the time, and what the gateways saw of the new
// revision and of the one it replaces since the step began, it says
// whether to wait, take the next step, or roll back, and why. It does no
// I/O and reads no clock; the controller (package controllers) reads the
// rollout and the gateways' counters, calls Decide, and writes what it
// says.
//
// The judgment follows Flagger's and Argo Rollouts' canary analysis, with
// the old revision as the baseline rather than fixed thresholds: the new
// revision is worse when its error rate exceeds the old one's by more than
// a margin (judged as soon as enough requests are in, so that a revision
// that answers 500 goes back at once), or when its p99 latency is both a
// ratio and a margin above the old one's (judged at the step's end, over
// the whole step, as a p99 of a few requests is noise).
package canary

import (
	"fmt"
	"time"

	"github.com/surgeplatform/surge/api"
)

// Evidence is what the gateways saw of a canary and its baseline since
// Since: the start of the step, or later when the controller (a new
// leader) began counting after it.
type Evidence struct {
	Since    time.Time
	Canary   api.Outcomes
	Baseline api.Outcomes
}

// Action is what the controller does with a rollout.
type Action int

// Actions.
const (
	// Wait: the step goes on; look again by Decision.Next.
	Wait Action = iota
	// Advance: take step Decision.Step, Decision.Percent of the traffic;
	// at 100% the rollout has succeeded.
	Advance
	// RollBack: all the traffic back to the baseline, for Decision.Reason.
	RollBack
)

// String names the action.
func (a Action) String() string {
	switch a {
	case Wait:
		return "wait"
	case Advance:
		return "advance"
	case RollBack:
		return "roll back"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is what Decide says to do.
type Decision struct {
	Action Action
	// Step and Percent are the step to take (Advance).
	Step    int32
	Percent int32
	// Reason says why a rollout goes back (RollBack), or that a step
	// advances unjudged (Advance, too few requests); "" otherwise.
	Reason string
	// Next is when the step ends (Wait): the latest time to look again.
	Next time.Time
	// Analysis is the comparison the decision rests on.
	Analysis api.RolloutAnalysis
}

// Quantile is the latency quantile compared: the p99.
const Quantile = 0.99

// Health summarizes outcomes as a rollout's status shows them.
func Health(o api.Outcomes) api.RevisionHealth {
	return api.RevisionHealth{Requests: o.Requests, Errors: o.Errors, P99: api.Duration{Duration: o.Quantile(Quantile)}}
}

// Decide judges a canary rollout in progress at now (ro.Spec.Canary set,
// ro.Status.Phase Progressing) on ev. The thresholds are the strategy's
// (api.CanaryStrategy, with its defaults for zero ones).
func Decide(now time.Time, ro *api.Rollout, ev Evidence) Decision {
	c := ro.Spec.Canary.WithDefaults()
	canary, base := Health(ev.Canary), Health(ev.Baseline)
	d := Decision{Analysis: api.RolloutAnalysis{At: now, Since: ev.Since, Canary: canary, Baseline: base}}
	stepEnd := ro.Status.StepStarted.Add(c.StepDuration.Duration)
	ended := !now.Before(stepEnd)

	// Errors: as soon as enough requests are in, or on whatever came by
	// the step's end.
	if canary.Requests >= c.MinRequests || (ended && canary.Requests > 0) {
		if cr, br := canary.ErrorRate(), base.ErrorRate(); cr-br > c.MaxErrorRateIncrease {
			d.Action = RollBack
			d.Reason = fmt.Sprintf("error rate %.1f%% against %.1f%% for %s (more than %.1f points worse), over %d requests at %d%%",
				100*cr, 100*br, ro.Spec.From, 100*c.MaxErrorRateIncrease, canary.Requests, ro.Status.Percent)
			return d
		}
	}
	if !ended {
		d.Action, d.Next = Wait, stepEnd
		return d
	}
	// Latency: at the step's end, over all of it, when both sides have
	// enough requests for a p99 to mean something.
	judged := canary.Requests >= c.MinRequests && base.Requests >= c.MinRequests
	if judged {
		cp, bp := canary.P99.Duration, base.P99.Duration
		if float64(cp) > c.MaxLatencyRatio*float64(bp) && cp-bp > c.MinLatencyIncrease.Duration {
			d.Action = RollBack
			d.Reason = fmt.Sprintf("p99 latency %s against %s for %s (more than %gx and %s slower), over %d requests at %d%%",
				round(cp), round(bp), ro.Spec.From, c.MaxLatencyRatio, c.MinLatencyIncrease.Duration, canary.Requests, ro.Status.Percent)
			return d
		}
	}
	next := ro.Status.Step + 1
	if int(next) >= len(c.Steps) {
		next = int32(len(c.Steps) - 1)
	}
	d.Action, d.Step, d.Percent = Advance, next, 100
	if len(c.Steps) > 0 {
		d.Percent = c.Steps[next]
	}
	if !judged {
		d.Reason = fmt.Sprintf("step at %d%% not judged: %d requests of %s and %d of %s, fewer than %d",
			ro.Status.Percent, canary.Requests, ro.Spec.Revision, base.Requests, ro.Spec.From, c.MinRequests)
	}
	return d
}

// round shortens a latency for people: to the millisecond, or the
// microsecond under one.
func round(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
