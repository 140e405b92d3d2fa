package api

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// CanaryStrategy says how a function's new revision takes the traffic step
// by step, and when the rollout controller gives up on it. It is part of a
// function's spec (FunctionSpec.Canary) but not of its revisions': changing
// it alone makes no revision, and it applies to the next revision that
// rolls out. Zero thresholds take the defaults below, which SetDefaults
// fills in.
type CanaryStrategy struct {
	// Steps are the shares of the traffic, in percent, that the new
	// revision takes one after another, e.g. [10, 50, 100]: increasing,
	// from 1 to 100, the last 100.
	Steps []int32 `json:"steps"`
	// StepDuration is how long each step lasts before it is judged; the
	// last step (100%) ends the rollout at once. Default 30s.
	StepDuration Duration `json:"stepDuration,omitzero"`
	// MaxErrorRateIncrease is how much higher the new revision's error
	// rate (5xx answers and failed requests) may be than the old one's,
	// as a fraction: 0.05 allows 5 more errors per 100 requests. Default
	// 0.05. Errors are judged as soon as MinRequests are in, not only at
	// a step's end: a revision that answers 500 goes back at once.
	MaxErrorRateIncrease float64 `json:"maxErrorRateIncrease,omitempty"`
	// MaxLatencyRatio and MinLatencyIncrease bound the new revision's p99
	// latency: it is worse when it is more than MaxLatencyRatio times the
	// old one's and more than MinLatencyIncrease above it (both, so that
	// 1ms against 3ms is no regression). Defaults 2 and 100ms. Latency is
	// judged at a step's end, over all of the step.
	MaxLatencyRatio    float64  `json:"maxLatencyRatio,omitempty"`
	MinLatencyIncrease Duration `json:"minLatencyIncrease,omitzero"`
	// MinRequests is how many requests the new revision must answer in a
	// step before it is judged (and the old one, for latency). A step
	// that ends with fewer goes on to the next: no traffic, no harm seen.
	// Default 20.
	MinRequests int64 `json:"minRequests,omitempty"`
}

// Canary defaults, filled in by SetDefaults.
const (
	DefaultStepDuration         = 30 * time.Second
	DefaultMaxErrorRateIncrease = 0.05
	DefaultMaxLatencyRatio      = 2.0
	DefaultMinLatencyIncrease   = 100 * time.Millisecond
	DefaultMinRequests          = 20
)

// WithDefaults returns c with its zero thresholds set to their defaults.
func (c CanaryStrategy) WithDefaults() CanaryStrategy {
	c.setDefaults()
	return c
}

// setDefaults fills the zero thresholds of c.
func (c *CanaryStrategy) setDefaults() {
	if c.StepDuration.Duration == 0 {
		c.StepDuration = Duration{DefaultStepDuration}
	}
	if c.MaxErrorRateIncrease == 0 {
		c.MaxErrorRateIncrease = DefaultMaxErrorRateIncrease
	}
	if c.MaxLatencyRatio == 0 {
		c.MaxLatencyRatio = DefaultMaxLatencyRatio
	}
	if c.MinLatencyIncrease.Duration == 0 {
		c.MinLatencyIncrease = Duration{DefaultMinLatencyIncrease}
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
}

// String is the strategy as people write it: "10,50,100 every 30s".
func (c *CanaryStrategy) String() string {
	steps := make([]string, len(c.Steps))
	for i, s := range c.Steps {
		steps[i] = fmt.Sprint(s)
	}
	return strings.Join(steps, ",") + " every " + c.StepDuration.String()
}

// canary checks a canary strategy at field p.
func (v *validator) canary(p string, c *CanaryStrategy) {
	if len(c.Steps) == 0 {
		v.add(p+".steps", "is required: the shares of the traffic, e.g. [10, 50, 100]")
	}
	for i, s := range c.Steps {
		switch {
		case s < 1 || s > 100:
			v.add(fmt.Sprintf("%s.steps[%d]", p, i), "must be between 1 and 100, got %d", s)
		case i > 0 && s <= c.Steps[i-1]:
			v.add(fmt.Sprintf("%s.steps[%d]", p, i), "must be more than the step before (%d), got %d", c.Steps[i-1], s)
		}
	}
	if n := len(c.Steps); n > 0 && c.Steps[n-1] != 100 {
		v.add(p+".steps", "must end at 100, where the new revision takes all the traffic")
	}
	v.duration(p+".stepDuration", c.StepDuration, time.Second, 24*time.Hour)
	if c.MaxErrorRateIncrease < 0 || c.MaxErrorRateIncrease > 1 {
		v.add(p+".maxErrorRateIncrease", "must be a fraction between 0 and 1, got %g", c.MaxErrorRateIncrease)
	}
	if c.MaxLatencyRatio != 0 && c.MaxLatencyRatio < 1 {
		v.add(p+".maxLatencyRatio", "must be at least 1, got %g", c.MaxLatencyRatio)
	}
	v.duration(p+".minLatencyIncrease", c.MinLatencyIncrease, time.Millisecond, time.Hour)
	if c.MinRequests < 0 {
		v.add(p+".minRequests", "must not be negative")
	}
}

// RevisionTemplate is what a revision keeps of a function's spec: all of
// it but how revisions roll out and are kept (Canary, KeepRevisions) and
// how clients reach the function (HTTPSRedirect), which are the
// function's and make no revision when they change.
func RevisionTemplate(s *FunctionSpec) FunctionSpec {
	t := *s
	t.Canary, t.KeepRevisions, t.HTTPSRedirect = nil, 0, false
	return t
}

// RolloutPhase is where a rollout is.
type RolloutPhase string

// Rollout phases: Progressing, then Succeeded, RolledBack or Aborted.
const (
	// RolloutProgressing: a canary moves the traffic step by step.
	RolloutProgressing RolloutPhase = "Progressing"
	// RolloutSucceeded: the revision took all the traffic.
	RolloutSucceeded RolloutPhase = "Succeeded"
	// RolloutRolledBack: the traffic went back to the revision before,
	// by the rollout controller (Status.Reason says why) or a user
	// (surge rollback).
	RolloutRolledBack RolloutPhase = "RolledBack"
	// RolloutAborted: someone set the traffic by hand (surge traffic)
	// while the canary progressed; the controller left it as set.
	RolloutAborted RolloutPhase = "Aborted"
)

// Done reports whether the rollout has ended.
func (p RolloutPhase) Done() bool { return p != RolloutProgressing && p != "" }

// RolloutSpec is what a rollout does: which revision takes the traffic
// from which, and how.
type RolloutSpec struct {
	// Revision takes the traffic.
	Revision string `json:"revision"`
	// From is the revision that had the traffic before (the largest
	// share of it): what a canary is compared with, and where a rollback
	// returns. Empty for a function's first revision.
	From string `json:"from,omitempty"`
	// Canary, when set, is the strategy the rollout follows, copied from
	// the function's spec when it began; nil moved all the traffic at
	// once.
	Canary *CanaryStrategy `json:"canary,omitempty"`
	// Rollback is true for the rollout a user's rollback made (POST
	// .../rollouts/NAME/rollback), which moves all the traffic at once.
	Rollback bool `json:"rollback,omitempty"`
}

// RolloutStatus is where a rollout is, written by the rollout controller.
type RolloutStatus struct {
	Phase RolloutPhase `json:"phase"`
	// Step is the index in Canary.Steps of the step in progress (or the
	// last one taken).
	Step int32 `json:"step,omitempty"`
	// Percent is the share of the traffic Revision has now.
	Percent int32 `json:"percent"`
	// Started is when the rollout began, StepStarted when its current
	// step did, and Finished when it ended.
	Started     time.Time `json:"started,omitzero"`
	StepStarted time.Time `json:"stepStarted,omitzero"`
	Finished    time.Time `json:"finished,omitzero"`
	// Reason says why a rollout was rolled back or aborted, for people.
	Reason string `json:"reason,omitempty"`
	// Analysis is the last comparison of the revision with From.
	Analysis *RolloutAnalysis `json:"analysis,omitempty"`
}

// RolloutAnalysis compares a canary with its baseline over one step.
type RolloutAnalysis struct {
	// At is when the comparison was made, Since when its evidence starts
	// (the step's start, or when the controller's leader took over).
	At    time.Time `json:"at"`
	Since time.Time `json:"since"`
	// Canary is the new revision's, Baseline the old one's.
	Canary   RevisionHealth `json:"canary"`
	Baseline RevisionHealth `json:"baseline"`
}

// RevisionHealth is what the gateways saw of one revision over a period.
type RevisionHealth struct {
	// Requests answered, and of them Errors (5xx, or failed).
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// P99 is the 99th percentile of the latency, from the gateways'
	// merged histograms (LatencyBuckets); zero without requests.
	P99 Duration `json:"p99,omitzero"`
}

// ErrorRate is Errors over Requests, 0 without requests.
func (h RevisionHealth) ErrorRate() float64 {
	if h.Requests == 0 {
		return 0
	}
	return float64(h.Errors) / float64(h.Requests)
}

// Rollout is how a function's latest traffic change is going: one per
// function, named after it, replaced by each rollout. The rollout
// controller writes it (the API serves it read-only); `surge rollout
// status` reads it.
type Rollout struct {
	Kind     string        `json:"kind,omitempty"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     RolloutSpec   `json:"spec"`
	Status   RolloutStatus `json:"status"`
}

// GetMetadata implements Object.
func (r *Rollout) GetMetadata() *ObjectMeta { return &r.Metadata }

// ObjectKind implements Object.
func (*Rollout) ObjectKind() Kind { return RolloutKind }

// RolloutKind is the kind of Rollouts, named after their function.
var RolloutKind = Kind{Name: KindRollout, Plural: "rollouts", Namespaced: true}

// KindRollout is a function's rollout, as its kind field says.
const KindRollout = "Rollout"

// RollbackRequest is the body of POST
// /v1/namespaces/NS/rollouts/NAME/rollback.
type RollbackRequest struct {
	// Revision is where the traffic goes; empty means the revision that
	// had it before the current rollout (its Spec.From).
	Revision string `json:"revision,omitempty"`
}

// RollbackResponse answers a rollback.
type RollbackResponse struct {
	// Rollout is the rollout the rollback wrote; its Spec.Revision has
	// all the traffic now, and Spec.From had the largest share of it.
	Rollout Rollout `json:"rollout"`
	// Activated is true when the revision was at zero replicas and the
	// rollback asked for one first: requests wait in the gateways for it
	// to be Ready, as they do for any revision woken from zero.
	Activated bool `json:"activated,omitempty"`
}

// MainTarget is the revision with the largest share of t (the newest of
// equal shares), or "" when none has a share.
func MainTarget(t *Traffic) string {
	if t == nil {
		return ""
	}
	best, bestPct, bestN := "", int32(0), int64(0)
	for _, tt := range t.Spec.Targets {
		_, n, _ := ParseRevisionName(tt.Revision)
		if tt.Percent > bestPct || (tt.Percent == bestPct && tt.Percent > 0 && n > bestN) {
			best, bestPct, bestN = tt.Revision, tt.Percent, n
		}
	}
	return best
}

// Tagged returns the revision t tags tag, or "".
func Tagged(t *Traffic, tag string) string {
	if t == nil {
		return ""
	}
	for _, tt := range t.Spec.Targets {
		if tt.Tag == tag {
			return tt.Revision
		}
	}
	return ""
}

// Split returns t's targets with their shares set to shares (a revision
// absent from shares gets 0%), keeping every tag; targets with neither a
// share nor a tag are dropped. The order is shares' revisions by number,
// then the tagged ones.
func Split(t *Traffic, shares map[string]int32) []TrafficTarget {
	var out []TrafficTarget
	for rev, pct := range shares {
		if pct > 0 {
			out = append(out, TrafficTarget{Revision: rev, Percent: pct})
		}
	}
	if t != nil {
		for _, tt := range t.Spec.Targets {
			if tt.Tag == "" {
				continue
			}
			if i := slices.IndexFunc(out, func(o TrafficTarget) bool { return o.Revision == tt.Revision }); i >= 0 {
				out[i].Tag = tt.Tag
				continue
			}
			out = append(out, TrafficTarget{Revision: tt.Revision, Tag: tt.Tag})
		}
	}
	slices.SortFunc(out, func(a, b TrafficTarget) int {
		_, na, _ := ParseRevisionName(a.Revision)
		_, nb, _ := ParseRevisionName(b.Revision)
		return cmp.Compare(na, nb)
	})
	return out
}

// SameShares reports whether t gives every revision the share shares
// does, whatever its tags and order.
func SameShares(t *Traffic, shares map[string]int32) bool {
	have := SharesOf(t)
	for rev, pct := range shares {
		if pct > 0 && have[rev] != pct {
			return false
		}
		delete(have, rev)
	}
	return len(have) == 0
}

// Shares is the split of the traffic the rollout left, by revision: what
// the Traffic holds while nobody else changed it. It is nil for an
// aborted rollout, whose split a user set.
func (r *Rollout) Shares() map[string]int32 {
	switch r.Status.Phase {
	case RolloutProgressing:
		m := map[string]int32{r.Spec.Revision: r.Status.Percent}
		if r.Spec.From != "" && r.Status.Percent < 100 {
			m[r.Spec.From] += 100 - r.Status.Percent
		}
		return m
	case RolloutSucceeded:
		return map[string]int32{r.Spec.Revision: 100}
	case RolloutRolledBack:
		return map[string]int32{r.Spec.From: 100}
	}
	return nil
}

// SharesOf is t's split by revision, for SameShares and comparisons.
func SharesOf(t *Traffic) map[string]int32 {
	m := map[string]int32{}
	if t != nil {
		for _, tt := range t.Spec.Targets {
			if tt.Percent > 0 {
				m[tt.Revision] += tt.Percent
			}
		}
	}
	return m
}

// KeepsRevision says why revision rev of function fn must not be deleted,
// or "" when it may be: it takes traffic or has a tag (t), it is the
// function's latest or latest ready revision, or it is the revision or
// the baseline of the function's rollout (ro), where a rollback returns.
func KeepsRevision(fn *Function, t *Traffic, ro *Rollout, rev string) string {
	if t != nil {
		for _, tt := range t.Spec.Targets {
			switch {
			case tt.Revision != rev:
			case tt.Percent > 0:
				return fmt.Sprintf("it takes %d%% of the traffic", tt.Percent)
			case tt.Tag != "":
				return fmt.Sprintf("it is tagged %q (surge untag %s %s)", tt.Tag, fn.Metadata.Name, tt.Tag)
			}
		}
	}
	switch rev {
	case fn.Status.LatestRevision:
		return "it is the function's latest revision"
	case fn.Status.LatestReadyRevision:
		return "it is the function's latest ready revision"
	}
	if ro != nil && (ro.Spec.Revision == rev || ro.Spec.From == rev) {
		return fmt.Sprintf("the function's rollout (%s from %s) may roll back to it", ro.Spec.Revision, ro.Spec.From)
	}
	return ""
}

// Prunable returns, oldest first, the revisions (of revs, a function's)
// that a policy of keeping the keep newest deletable ones deletes: those
// KeepsRevision lets go, but the newest keep of them.
func Prunable(fn *Function, t *Traffic, ro *Rollout, revs []string, keep int) []string {
	var free []string
	for _, r := range revs {
		if KeepsRevision(fn, t, ro, r) == "" {
			free = append(free, r)
		}
	}
	slices.SortFunc(free, func(a, b string) int {
		_, na, _ := ParseRevisionName(a)
		_, nb, _ := ParseRevisionName(b)
		return cmp.Compare(na, nb)
	})
	if len(free) <= keep {
		return nil
	}
	return free[:len(free)-max(keep, 0)]
}
