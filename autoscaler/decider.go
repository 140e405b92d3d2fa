package autoscaler

import (
	"fmt"
	"math"
	"time"
)

// Sample is what the gateways observed of one revision during one
// SamplePeriod, summed over gateways (and, for CPU, over the node agents).
type Sample struct {
	// Concurrency is the time-averaged number of requests being served.
	Concurrency float64
	// Queued is the time-averaged number of requests waiting in the
	// gateways for a replica.
	Queued float64
	// Requests is the number of requests that arrived.
	Requests float64
	// CPU is the CPU in use by the revision's replicas, in cores.
	CPU float64
}

func (s Sample) active() bool { return s.Concurrency > 0 || s.Queued > 0 || s.Requests > 0 }

// Decision is the outcome of one Scale call.
type Decision struct {
	// Desired is the number of replicas the revision should have.
	Desired int
	// Reason is the rule that set Desired last.
	Reason Reason
	// Panic reports whether the decider is in panic mode.
	Panic bool
	// Metric is the metric that asked for the most replicas; empty when
	// none asked for any.
	Metric Metric
	// Prediction is the adaptive keep-alive in force after the last use;
	// zero when the revision's keep-alive is fixed.
	Prediction Prediction
}

// Decider is the autoscaler's decision core for one revision: a state
// machine fed per-period Samples and asked for a Decision. It does no I/O,
// starts no goroutines and reads no clock: the caller passes the time in.
// Keep one per revision (for example in a map keyed by revision name) and,
// every SamplePeriod, Record the summed gateway samples and then call
// Scale. A Decider is not safe for concurrent use.
type Decider struct {
	cfg    Config
	policy Policy

	// Resolved from cfg and policy.
	period   time.Duration
	stableW  time.Duration
	grace    time.Duration
	adaptive bool
	targets  []resolvedTarget
	capacity float64 // requests one replica can take, for burst capacity

	win  *windows
	gaps *IdleTimes

	// usePeak is the most replicas one period's demand needed during the
	// current (or, when idle, the last) use; pre-warm and keep-alive hold
	// that many. bucketDemand sums the demand recorded for lastRecorded.
	usePeak      int
	bucketDemand float64
	// prevPeak and prevEnd are the peak and last bucket of the use before
	// the current one: replicas pre-warmed for the current use stay until
	// the predicted window after prevEnd closes, so the first requests of
	// a burst do not tear down what was warmed for it.
	prevPeak int
	prevEnd  int64
	hasPrev  bool

	everActive   bool
	lastActive   int64 // newest bucket with traffic
	recorded     bool
	lastRecorded int64 // newest bucket recorded
	recordActive bool  // lastRecorded had traffic

	panicking  bool
	panicSince time.Time // last time the panic threshold was crossed
	maxPanic   int

	zeroSince time.Time // when the metrics first asked for zero; zero if not
}

type resolvedTarget struct {
	metric Metric
	value  float64
}

// NewDecider returns a Decider for a revision with policy p under cfg. It
// returns an error wrapping ErrInvalidConfig, naming every bad field, when
// either is invalid.
func NewDecider(cfg Config, p Policy) (*Decider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new decider: %w", err)
	}
	gaps, err := NewIdleTimes(cfg.KeepAlive, cfg.SamplePeriod, cfg.ColdStartCost)
	if err != nil {
		return nil, fmt.Errorf("new decider: %w", err)
	}
	d := &Decider{cfg: cfg, gaps: gaps}
	if err := d.SetPolicy(p); err != nil {
		return nil, fmt.Errorf("new decider: %w", err)
	}
	return d, nil
}

// SetPolicy changes the revision's policy. The recorded samples and the
// idle-time histogram are kept; a change of stable window starts the
// windows afresh. It returns an error, and changes nothing, when p is
// invalid.
func (d *Decider) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	cfg := d.cfg
	stableW := cfg.StableWindow
	if p.StableWindow > 0 {
		stableW = p.StableWindow
	}
	if stableW < cfg.SamplePeriod || stableW/cfg.SamplePeriod > maxBuckets {
		return fmt.Errorf("set policy: %w: policy StableWindow = %v: must be between SamplePeriod and %d sample periods", ErrInvalidConfig, p.StableWindow, maxBuckets)
	}
	grace := cfg.ScaleToZeroGrace
	if p.ScaleToZeroGrace > 0 {
		grace = p.ScaleToZeroGrace
	}
	targets := p.Targets
	if len(targets) == 0 {
		targets = []Target{{Metric: MetricConcurrency}}
	}
	capacity := cfg.UnlimitedConcurrencyTarget
	if p.ContainerConcurrency > 0 {
		capacity = float64(p.ContainerConcurrency)
	}
	var rts []resolvedTarget
	for _, t := range targets {
		v := t.Value
		if v == 0 {
			switch t.Metric {
			case MetricConcurrency:
				v = cfg.UnlimitedConcurrencyTarget
				if p.ContainerConcurrency > 0 {
					v = cfg.TargetUtilization * float64(p.ContainerConcurrency)
				}
			case MetricRPS:
				v = cfg.RPSTarget
			case MetricCPU:
				v = cfg.CPUTarget
			}
		}
		rts = append(rts, resolvedTarget{metric: t.Metric, value: v})
	}

	if d.win == nil || stableW != d.stableW {
		nb := int(stableW / cfg.SamplePeriod)
		np := max(1, int(math.Round(float64(nb)*cfg.PanicWindowPercentage/100)))
		d.win = newWindows(nb, np)
	}
	d.policy = p
	d.period = cfg.SamplePeriod
	d.stableW = stableW
	d.grace = grace
	d.targets = rts
	d.capacity = capacity
	switch p.KeepAlive {
	case KeepAliveFixed:
		d.adaptive = false
	case KeepAliveAdaptive:
		d.adaptive = true
	default:
		d.adaptive = cfg.KeepAlive.Adaptive
	}
	return nil
}

func (d *Decider) bucket(t time.Time) int64 {
	ns := t.UnixNano()
	p := int64(d.period)
	b := ns / p
	if ns%p < 0 {
		b--
	}
	return b
}

// Record adds a sample for the period ending at now. Samples recorded for
// the same period add up, so each gateway's sample may be recorded on its
// own. Traffic after a quiet gap adds the gap to the idle times.
func (d *Decider) Record(now time.Time, s Sample) {
	b := d.bucket(now)
	demand := max(0, s.Concurrency) + max(0, s.Queued)
	d.win.add(b, vec{
		demand:   fixed(s.Concurrency) + fixed(s.Queued),
		requests: fixed(s.Requests),
		cpu:      fixed(s.CPU),
	})
	switch {
	case !d.recorded || b > d.lastRecorded:
		d.recorded, d.lastRecorded, d.recordActive = true, b, s.active()
		d.bucketDemand = demand
	case b == d.lastRecorded:
		d.recordActive = d.recordActive || s.active()
		d.bucketDemand += demand
	}
	if !s.active() {
		return
	}
	if d.everActive && b > d.lastActive+1 {
		// The sample covers the period ending at bucket b, so the gap runs
		// from the end of bucket lastActive to the start of bucket b.
		if d.gaps.Add(time.Duration(b-d.lastActive-1) * d.period) {
			// A new use.
			d.prevPeak, d.prevEnd, d.hasPrev = d.usePeak, d.lastActive, true
			d.usePeak = 0
		}
	}
	if !d.everActive || b > d.lastActive {
		d.lastActive = b
	}
	d.everActive = true
	if b == d.lastRecorded {
		d.usePeak = max(d.usePeak, 1, ceilInt(d.bucketDemand/d.capacity))
	}
}

// Scale returns the desired replica count at now, given the number of ready
// replicas. Record the samples of now's period before calling it.
func (d *Decider) Scale(now time.Time, ready int) Decision {
	b := d.bucket(now)
	d.win.advance(b)
	stable, panicAvg := d.win.averages()
	periodSec := d.period.Seconds()
	traffic := stable.demand > 0 || stable.requests > 0

	var dec Decision
	// stableWant and panicWant include burst capacity; panicLoad, which
	// decides whether to panic, does not, as in Knative.
	var stableWant, panicWant, panicLoad float64
	// inFlight is the demand of now's period, for the ReactionTime bound.
	var inFlight float64
	if d.recorded && d.lastRecorded == b {
		inFlight = d.bucketDemand
	}
	for _, t := range d.targets {
		var sv, pv, pl float64
		switch t.metric {
		case MetricConcurrency:
			sv = d.replicasFor(stable.demand, stable.requests/periodSec, inFlight, t.value)
			// The panic window's spares are priced on the stable window's
			// arrival rate: 6s hold too few arrivals to estimate one (a lone
			// request reads as ten a minute).
			pv = d.replicasFor(panicAvg.demand, stable.requests/periodSec, inFlight, t.value)
			pl = panicAvg.demand / t.value
		case MetricRPS:
			sv = stable.requests / periodSec / t.value
			pv = panicAvg.requests / periodSec / t.value
			pl = pv
		case MetricCPU:
			if traffic {
				sv = stable.cpu / t.value
				pv = panicAvg.cpu / t.value
				pl = pv
			}
		}
		if sv > stableWant {
			stableWant, dec.Metric = sv, t.metric
		}
		panicWant = max(panicWant, pv)
		panicLoad = max(panicLoad, pl)
	}

	readyF := float64(max(1, ready))
	maxUp := int(math.Ceil(d.cfg.MaxScaleUpRate * readyF))
	maxDown := int(math.Floor(readyF / d.cfg.MaxScaleDownRate))
	stableN := ceilInt(stableWant)
	panicN := ceilInt(panicWant)

	// Panic mode, as in Knative's KPA: crossing the threshold (re)starts
	// it; it ends a stable window after the last crossing.
	if panicLoad/readyF >= d.cfg.PanicThreshold {
		if !d.panicking {
			d.maxPanic = ready
		}
		d.panicking, d.panicSince = true, now
	} else if d.panicking && now.Sub(d.panicSince) >= d.stableW {
		d.panicking, d.maxPanic = false, 0
	}
	want := stableN
	dec.Reason = ReasonStable
	if d.cfg.PanicScaleUp && panicN > want {
		want, dec.Reason = panicN, ReasonPanic
	}
	if d.panicking {
		d.maxPanic = max(d.maxPanic, panicN, stableN)
		want = d.maxPanic
		dec.Reason = ReasonPanic
	}

	want, dec.Reason = d.keepAlive(now, b, want, dec.Reason)

	// Rate limits, relative to the ready replicas (at least one), as in
	// Knative. One ready replica may always go to zero: floor(1/rate) = 0.
	if want > maxUp {
		want, dec.Reason = maxUp, ReasonRateLimit
	} else if want < maxDown && !d.panicking {
		want, dec.Reason = maxDown, ReasonRateLimit
	}

	if want < d.policy.MinReplicas {
		want, dec.Reason = d.policy.MinReplicas, ReasonBound
	}
	if d.policy.MaxReplicas > 0 && want > d.policy.MaxReplicas {
		want, dec.Reason = d.policy.MaxReplicas, ReasonBound
	}
	dec.Desired = want
	dec.Panic = d.panicking
	if d.adaptive {
		dec.Prediction = d.gaps.Prediction()
	}
	if stableN == 0 {
		dec.Metric = ""
	}
	return dec
}

// ActivationScale returns the replicas that demand requests waiting or in
// flight need at once, as a gateway asks for them when it holds requests
// the revision's replicas cannot take: demand over the revision's
// concurrency target per replica (or over one replica's capacity, when it
// scales on another metric), rounded up, and within the policy's bounds:
// at least MinReplicas and one, at most MaxReplicas. Unlike Scale it
// averages nothing and limits no rate: the requests are already waiting,
// and a burst from zero should not ask for one replica at a time.
func (d *Decider) ActivationScale(demand float64) int {
	per := d.capacity
	for _, t := range d.targets {
		if t.metric == MetricConcurrency {
			per = t.value
		}
	}
	n := max(ceilInt(demand/per), d.policy.MinReplicas, 1)
	if d.policy.MaxReplicas > 0 {
		n = min(n, d.policy.MaxReplicas)
	}
	return n
}

// replicasFor returns the replicas demand in-flight requests arriving at
// lambda per second need at target requests per replica, with the burst
// capacity ColdStartCost buys. inFlight is the demand of the last period,
// which the ReactionTime bound builds on.
func (d *Decider) replicasFor(demand, lambda, inFlight, target float64) float64 {
	n := demand / target
	if v := d.cfg.ColdStartCost.Seconds(); v > 0 {
		k := burstCapacity(demand, lambda*v)
		if h := d.cfg.ReactionTime.Seconds(); h > 0 && k > 0 {
			k = max(demand, min(k, math.Ceil(inFlight-1e-9)+arrivalSpare(lambda*h, v/h)))
		}
		n = max(n, k/d.capacity)
	}
	return n
}

// burstCapacity returns the smallest capacity k, in requests, beyond which
// one more request of capacity saves fewer than one cold start per worth
// replica-seconds: the least k >= a with P(N=k)*worth <= 1 for N Poisson
// with mean a. worth is the arrival rate times the replica time a cold
// start is worth. It walks the distribution up from its mode, about
// sqrt(a) steps per standard deviation of spare capacity.
func burstCapacity(a, worth float64) float64 {
	if !(a > 0) || !(worth > 1) || math.IsInf(a, 0) {
		return 0
	}
	k := math.Floor(a)
	limit := k + 50*math.Sqrt(a) + 100 // P(N=limit) is far below any worth
	pmf := poissonPMF(a, k)
	for pmf*worth > 1 && k < limit {
		k++
		pmf *= a / k
	}
	return max(k, a)
}

// arrivalSpare returns the spare capacity, in requests, for the arrivals
// of one reaction time: the least s with P(A >= s+1)*worth <= 1 for A
// Poisson with mean m (the arrivals expected within the reaction time).
// The (s+1)-th spare request of capacity saves a cold start when s+1 or
// more requests arrive before capacity can be added; worth is the replica
// time a cold start is worth over the reaction time, in reaction times.
func arrivalSpare(m, worth float64) float64 {
	if !(m > 0) || !(worth > 1) || math.IsInf(m, 0) {
		return 0
	}
	limit := m + 50*math.Sqrt(m) + 100
	pmf := math.Exp(-m)
	tail := -math.Expm1(-m) // P(A >= 1)
	s := 0.0
	for tail*worth > 1 && s < limit {
		s++
		pmf *= m / s
		tail -= pmf
	}
	return s
}

// poissonPMF returns P(N=k) for N Poisson with mean a, k a whole number.
func poissonPMF(a, k float64) float64 {
	lg, _ := math.Lgamma(k + 1)
	return math.Exp(k*math.Log(a) - a - lg)
}

// keepAlive applies scale to zero, the scale-to-zero grace or keep-alive,
// and pre-warm to want, the replicas the metrics ask for.
func (d *Decider) keepAlive(now time.Time, b int64, want int, reason Reason) (int, Reason) {
	if want > 0 {
		d.zeroSince = time.Time{}
	} else if d.zeroSince.IsZero() {
		d.zeroSince = now
	}
	if !d.everActive {
		if want == 0 {
			return 0, ReasonToZero
		}
		return want, reason
	}
	if d.panicking {
		return want, reason // no scale-down while panicking
	}
	// idleFor is how long since the end of the last period with traffic;
	// the revision counts as idle once a quiet period was recorded after
	// it, or two periods passed without one.
	idleFor := time.Duration(b-d.lastActive) * d.period
	idle := d.lastRecorded > d.lastActive || b-d.lastActive >= 2
	if !d.adaptive {
		if want > 0 {
			return want, reason
		}
		if now.Sub(d.zeroSince) < d.grace {
			return 1, ReasonKeepAlive
		}
		return 0, ReasonToZero
	}
	pred := d.gaps.Prediction()
	hold := max(d.usePeak, 1)
	switch pred.Kind {
	case PredictPrewarm, PredictRelease:
		if !idle || idleFor < pred.Linger {
			if pred.Kind == PredictPrewarm && d.hasPrev {
				since := time.Duration(b-d.prevEnd) * d.period
				if since >= pred.Prewarm && since < pred.Until && want < d.prevPeak {
					return d.prevPeak, ReasonPrewarm
				}
			}
			return want, reason
		}
		if pred.Kind == PredictPrewarm && idleFor >= pred.Prewarm && idleFor < pred.Until {
			return hold, ReasonPrewarm
		}
		return 0, ReasonToZero
	default: // PredictFixed, PredictKeepAlive
		if want > 0 {
			return want, reason
		}
		if idleFor < pred.Until {
			return 1, ReasonKeepAlive
		}
		if idleFor >= pred.RepeatFrom && idleFor < pred.RepeatUntil {
			return hold, ReasonPrewarm
		}
		return 0, ReasonToZero
	}
}

func ceilInt(v float64) int {
	if !(v > 0) {
		return 0
	}
	if v >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int(math.Ceil(v - 1e-9))
}
