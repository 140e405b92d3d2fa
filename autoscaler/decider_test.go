package autoscaler

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// t0 is the fake clock's start; tests advance it by hand, one second per
// tick, as the live runner's ticker would.
var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// rig drives a Decider second by second. Unless a test fixes ready, the
// replicas follow each decision at once (a perfect controller).
type rig struct {
	t     *testing.T
	d     *Decider
	ready int
	fixed bool // ready stays as set
	dec   map[int]Decision
}

func newRig(t *testing.T, cfg Config, p Policy) *rig {
	t.Helper()
	d, err := NewDecider(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, d: d, dec: map[int]Decision{}}
}

// run records load(sec) and scales, for every second in [from, to).
func (r *rig) run(from, to int, load func(sec int) Sample) {
	for sec := from; sec < to; sec++ {
		r.d.Record(at(sec), load(sec))
		dec := r.d.Scale(at(sec), r.ready)
		r.dec[sec] = dec
		if !r.fixed {
			r.ready = dec.Desired
		}
	}
}

func constant(s Sample) func(int) Sample { return func(int) Sample { return s } }

func knativeConfig() Config {
	c := DefaultConfig()
	c.ColdStartCost = 0
	c.ReactionTime = 0
	c.PanicScaleUp = false
	c.KeepAlive.Adaptive = false
	return c
}

// burstConfig is the default config with a cold start worth 10 minutes,
// the value the burst capacity tests work their numbers out at, so that
// they do not move with the default's dial.
func burstConfig() Config {
	c := DefaultConfig()
	c.ColdStartCost = 10 * time.Minute
	return c
}

func withoutReactionTime() Config {
	c := burstConfig()
	c.ReactionTime = 0
	return c
}

func withPanicScaleUp() Config {
	c := knativeConfig()
	c.PanicScaleUp = true
	return c
}

// stepAt returns a load of from requests in flight (one new per second
// each) before sec and to from sec on.
func stepAt(sec int, from, to float64) func(int) Sample {
	return func(s int) Sample {
		if s >= sec {
			return Sample{Concurrency: to, Requests: to}
		}
		return Sample{Concurrency: from, Requests: from}
	}
}

type got struct {
	Desired int
	Reason  Reason
	Panic   bool
}

func summary(d Decision) got { return got{d.Desired, d.Reason, d.Panic} }

func TestDeciderScenarios(t *testing.T) {
	lambdaLike := Policy{ContainerConcurrency: 1}
	tests := []struct {
		name   string
		cfg    Config
		policy Policy
		play   func(r *rig)
	}{
		{
			name: "steady load: target utilisation of the concurrency limit", cfg: knativeConfig(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 120, constant(Sample{Concurrency: 7, Requests: 7}))
				// 7 in flight at 70% of 1 per replica.
				r.expect(119, got{10, ReasonStable, false})
			},
		},
		{
			name: "steady load with burst capacity: Poisson spare replicas", cfg: burstConfig(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 120, constant(Sample{Concurrency: 10, Requests: 10}))
				// 10 in flight, 10/s: worth 10/s * 600s per cold start,
				// capacity 24 (P(N=24) < 1/6000 for Poisson(10)).
				r.expect(119, got{24, ReasonStable, false})
			},
		},
		{
			name: "long requests at a low rate: spare over the requests in flight", cfg: burstConfig(), policy: lambdaLike,
			play: func(r *rig) {
				// One 15s request every 15s: 1 in flight, 1/15 per second.
				// The stationary tail asks for 4 (P(N=4)*40 < 1 for
				// Poisson(1)); within the 2s reaction time at most 2 more
				// requests are worth a slot (P(A>=3)*300 < 1 for A
				// Poisson(2/15)), so 1+2.
				r.run(0, 120, constant(Sample{Concurrency: 1, Requests: 1.0 / 15}))
				r.expect(119, got{3, ReasonStable, false})
			},
		},
		{
			name: "long requests at a low rate without the reaction-time bound", cfg: withoutReactionTime(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 120, constant(Sample{Concurrency: 1, Requests: 1.0 / 15}))
				r.expect(119, got{4, ReasonStable, false})
			},
		},
		{
			name: "step below the panic threshold: KPA waits for the stable window", cfg: knativeConfig(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 106, stepAt(100, 1, 2.5))
				r.expect(99, got{2, ReasonStable, false})
				// 2.5/0.7 asks 4 of 2 ready: under 200%, no panic.
				r.expect(105, got{2, ReasonStable, false})
			},
		},
		{
			name: "step below the panic threshold: PanicScaleUp follows the panic window up", cfg: withPanicScaleUp(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 160, stepAt(100, 1, 2.5))
				r.expect(99, got{2, ReasonStable, false})
				r.expect(105, got{4, ReasonPanic, false})
				// The stable window catches up and takes over.
				r.expect(159, got{4, ReasonStable, false})
			},
		},
		{
			name: "10x step: panic within the panic window, no scale-down while panicking", cfg: knativeConfig(), policy: lambdaLike,
			play: func(r *rig) {
				step := func(sec int) Sample {
					if sec >= 100 && sec < 130 {
						return Sample{Concurrency: 10, Requests: 10}
					}
					return Sample{Concurrency: 1, Requests: 1}
				}
				r.run(0, 400, step)
				r.expect(99, got{2, ReasonStable, false})
				first := -1
				for sec := 100; sec <= 106; sec++ {
					if r.dec[sec].Panic {
						first = sec
						break
					}
				}
				if first < 0 {
					r.t.Fatalf("no panic within the 6s panic window after the step")
				}
				if d := r.dec[first]; d.Desired < 5 || d.Reason != ReasonPanic {
					r.t.Errorf("at the panic (t=%d) got %+v, want a panic scale-up", first, summary(d))
				}
				// The load drops at 130; panic holds the peak until a stable
				// window after the last crossing.
				peak := r.dec[129].Desired
				if peak < 15 {
					r.t.Errorf("desired at t=129 = %d, want at least 15 (10 in flight at 70%%)", peak)
				}
				for sec := 130; sec < 400 && r.dec[sec].Panic; sec++ {
					if r.dec[sec].Desired < peak {
						r.t.Fatalf("scaled down to %d at t=%d while panicking (peak %d)", r.dec[sec].Desired, sec, peak)
					}
				}
				// And then decays by at most half per decision, to the load.
				for sec := 131; sec < 400; sec++ {
					if prev, cur := r.dec[sec-1].Desired, r.dec[sec].Desired; cur < prev/2 {
						r.t.Errorf("t=%d: %d -> %d, faster than the 2x scale-down rate", sec, prev, cur)
					}
				}
				r.expect(399, got{2, ReasonStable, false})
			},
		},
		{
			name: "decay, then scale to zero after the grace", cfg: knativeConfig(), policy: lambdaLike,
			play: func(r *rig) {
				r.run(0, 300, func(sec int) Sample {
					if sec <= 100 {
						return Sample{Concurrency: 3, Requests: 3}
					}
					return Sample{}
				})
				r.expect(100, got{5, ReasonStable, false})
				// The last traffic (t=100) leaves the 60s window at t=160;
				// the last replica stays 30s more.
				r.expect(159, got{1, ReasonStable, false})
				r.expect(160, got{1, ReasonKeepAlive, false})
				r.expect(189, got{1, ReasonKeepAlive, false})
				r.expect(190, got{0, ReasonToZero, false})
				r.expect(299, got{0, ReasonToZero, false})
			},
		},
		{
			name: "bounds: min holds, max caps", cfg: knativeConfig(), policy: Policy{ContainerConcurrency: 1, MinReplicas: 2, MaxReplicas: 6},
			play: func(r *rig) {
				r.run(0, 10, constant(Sample{}))
				r.expect(9, got{2, ReasonBound, false})
				r.run(10, 100, constant(Sample{Concurrency: 50, Requests: 50}))
				r.expect(99, got{6, ReasonBound, true})
			},
		},
		{
			name: "rate limits: up to 1000x, down to half of the ready replicas", cfg: knativeConfig(), policy: lambdaLike,
			play: func(r *rig) {
				r.fixed, r.ready = true, 10
				r.run(0, 1, constant(Sample{}))
				r.expect(0, got{5, ReasonRateLimit, false})
				r.ready = 1
				r.run(1, 2, constant(Sample{Concurrency: 5000, Requests: 5000}))
				r.expect(1, got{1000, ReasonRateLimit, true})
			},
		},
		{
			name: "several metrics: the largest ask wins; background CPU does not hold", cfg: knativeConfig(),
			policy: Policy{Targets: []Target{{Metric: MetricConcurrency}, {Metric: MetricRPS, Value: 10}, {Metric: MetricCPU, Value: 0.5}}},
			play: func(r *rig) {
				r.run(0, 120, constant(Sample{Concurrency: 1, Requests: 50, CPU: 0.2}))
				r.expect(119, got{5, ReasonStable, false})
				if m := r.dec[119].Metric; m != MetricRPS {
					r.t.Errorf("metric = %q, want rps", m)
				}
				r.run(120, 240, constant(Sample{Concurrency: 1, Requests: 50, CPU: 4}))
				r.expect(239, got{8, ReasonStable, false})
				r.run(240, 400, constant(Sample{CPU: 0.3}))
				r.expect(399, got{0, ReasonToZero, false})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.cfg, tt.policy)
			r.t = t
			tt.play(r)
		})
	}
}

func (r *rig) expect(sec int, want got) {
	r.t.Helper()
	d, ok := r.dec[sec]
	if !ok {
		r.t.Fatalf("no decision at t=%d", sec)
	}
	if diff := cmp.Diff(want, summary(d)); diff != "" {
		r.t.Errorf("decision at t=%d mismatch (-want +got):\n%s", sec, diff)
	}
}

// timer returns a load of one 1-second request at every start.
func timer(starts ...int) func(int) Sample {
	set := map[int]bool{}
	for _, s := range starts {
		set[s] = true
	}
	return func(sec int) Sample {
		if set[sec] {
			return Sample{Concurrency: 1, Requests: 1}
		}
		return Sample{}
	}
}

// keepAliveConfig is the default config without PanicScaleUp, so that a
// keep-alive test's single requests ask for one replica each.
func keepAliveConfig() Config {
	c := DefaultConfig()
	c.PanicScaleUp = false
	return c
}

func TestDeciderKeepAlive(t *testing.T) {
	every5m := make([]int, 12)
	for i := range every5m {
		every5m[i] = 10 + 300*i
	}
	tests := []struct {
		name   string
		starts []int
		until  int
		want   map[int]got
		pred   Prediction
	}{
		{
			name:   "before the histogram is representative: fixed keep-alive",
			starts: []int{10, 310},
			until:  1300,
			want: map[int]got{
				// A young window sees 1 request in 11s: worth a spare.
				10:  {2, ReasonStable, false},
				309: {1, ReasonKeepAlive, false},
				310: {1, ReasonStable, false}, // one request a minute: no spare
				909: {1, ReasonKeepAlive, false},
				910: {0, ReasonToZero, false}, // 10m after the end of the last use
			},
			// One idle time of 4m59s: a pre-warm again from 3m48s to
			// 5m15s (the 4m bucket, widened by 5%), inside the fixed
			// keep-alive here.
			pred: Prediction{Kind: PredictFixed, Until: 10 * time.Minute, RepeatFrom: 228 * time.Second, RepeatUntil: 315 * time.Second},
		},
		{
			name:   "learning: a timer every 15m is pre-warmed from its third use",
			starts: []int{10, 910, 1810},
			until:  1900,
			// The second use outlives the 10m keep-alive and is cold; its
			// idle time of 14m59s has the third pre-warmed from 13m18s.
			want: map[int]got{
				909:  {0, ReasonToZero, false},
				910:  {1, ReasonStable, false},
				1509: {1, ReasonKeepAlive, false},
				1510: {0, ReasonToZero, false},
				1707: {0, ReasonToZero, false},
				1708: {1, ReasonPrewarm, false},
				1809: {1, ReasonPrewarm, false},
				1810: {1, ReasonStable, false}, // the use comes to a warm replica
				1899: {1, ReasonKeepAlive, false},
			},
			pred: Prediction{Kind: PredictFixed, Until: 10 * time.Minute, RepeatFrom: 798 * time.Second, RepeatUntil: 945 * time.Second},
		},
		{
			name:   "timer: release right after each use, pre-warm before the next",
			starts: every5m,
			until:  3700,
			// Idle times of 4m59s: pre-warm 3m48s after a use (4m less
			// 5%), keep until 5m15s (5m plus 5%).
			want: map[int]got{
				3010: {1, ReasonStable, false},
				3011: {0, ReasonToZero, false},
				3237: {0, ReasonToZero, false},
				3238: {1, ReasonPrewarm, false},
				3309: {1, ReasonPrewarm, false},
				3310: {1, ReasonStable, false}, // the use comes to a warm replica
				3311: {0, ReasonToZero, false},
				3538: {1, ReasonPrewarm, false},
				3624: {1, ReasonPrewarm, false},
				3625: {0, ReasonToZero, false}, // no use came by the tail
			},
			pred: Prediction{Kind: PredictPrewarm, Prewarm: 228 * time.Second, Until: 315 * time.Second},
		},
		{
			name:   "spread idle times: keeping does not pay, release after each use",
			starts: []int{10, 310, 1510, 3910, 7510, 12310, 18310},
			until:  18400,
			want: map[int]got{
				18310: {1, ReasonStable, false},
				18311: {0, ReasonToZero, false},
			},
			pred: Prediction{Kind: PredictRelease},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, keepAliveConfig(), Policy{ContainerConcurrency: 1})
			r.run(0, tt.until, timer(tt.starts...))
			for sec, want := range tt.want {
				r.expect(sec, want)
			}
			if diff := cmp.Diff(tt.pred, r.dec[tt.until-1].Prediction); diff != "" {
				t.Errorf("prediction mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeciderPrewarmsWhatTheLastUseNeeded(t *testing.T) {
	// A burst of 5 concurrent 1-second requests every 10 minutes.
	var starts []int
	for i := range 8 {
		starts = append(starts, 30+600*i)
	}
	burst := func(sec int) Sample {
		for _, s := range starts {
			if sec == s {
				return Sample{Concurrency: 5, Requests: 5}
			}
		}
		return Sample{}
	}
	r := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	last := starts[len(starts)-1]
	r.run(0, last+1, burst)
	if d := r.dec[last-1]; d.Desired != 5 || d.Reason != ReasonPrewarm {
		t.Errorf("just before the burst got %+v, want 5 replicas pre-warmed", summary(d))
	}
	if d := r.dec[last]; d.Desired < 5 {
		t.Errorf("at the burst got %+v, want the pre-warmed replicas kept", summary(d))
	}
}

func TestDeciderSamplesOfOnePeriodAddUp(t *testing.T) {
	one := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	two := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	for sec := range 200 {
		s := Sample{Concurrency: float64(sec % 7), Requests: float64(sec % 5), Queued: float64(sec%3) / 2}
		one.d.Record(at(sec), s)
		half := Sample{Concurrency: s.Concurrency / 2, Requests: s.Requests / 2, Queued: s.Queued / 2}
		two.d.Record(at(sec), half)
		two.d.Record(at(sec), half) // a second gateway
		a, b := one.d.Scale(at(sec), one.ready), two.d.Scale(at(sec), two.ready)
		if diff := cmp.Diff(a, b); diff != "" {
			t.Fatalf("t=%d: one summed sample vs two halves (-one +two):\n%s", sec, diff)
		}
		one.ready, two.ready = a.Desired, b.Desired
	}
}

func TestBurstCapacity(t *testing.T) {
	// brute force: the least k >= a with P(N=k)*worth <= 1.
	brute := func(a, worth float64) float64 {
		if a <= 0 || worth <= 1 {
			return 0
		}
		for k := 0.0; ; k++ {
			lg, _ := math.Lgamma(k + 1)
			if k >= math.Floor(a) && math.Exp(k*math.Log(a)-a-lg)*worth <= 1 {
				return max(k, a)
			}
		}
	}
	for _, c := range []struct{ a, worth float64 }{
		{0, 1000}, {0.5, 0.5}, {0.002, 600}, {0.02, 60}, {0.5, 20}, {1, 600}, {10, 6000}, {14.4, 9000}, {80, 1e5}, {150, 1e6}, {1000, 1e6},
	} {
		if got, want := burstCapacity(c.a, c.worth), brute(c.a, c.worth); got != want {
			t.Errorf("burstCapacity(%v, %v) = %v, want %v", c.a, c.worth, got, want)
		}
	}
	// Spare capacity grows as the square root of the demand.
	for _, a := range []float64{150, 1000, 1e5} {
		got := burstCapacity(a, 1e6)
		if z := (got - a) / math.Sqrt(a); z < 3.5 || z > 5 {
			t.Errorf("burstCapacity(%v, 1e6) = %v: %.2f standard deviations, want 3.5 to 5", a, got, z)
		}
	}
}

func TestArrivalSpare(t *testing.T) {
	// brute force: the least s with P(A >= s+1)*worth <= 1.
	brute := func(m, worth float64) float64 {
		if m <= 0 || worth <= 1 {
			return 0
		}
		cdf := 0.0
		for s := 0.0; ; s++ {
			lg, _ := math.Lgamma(s + 1)
			cdf += math.Exp(s*math.Log(m) - m - lg) // P(A <= s)
			if (1-cdf)*worth <= 1 {
				return s
			}
		}
	}
	tests := []struct{ m, worth float64 }{
		{0, 300}, {0.5, 1}, {0.002, 300}, {2.0 / 15, 300}, {0.066, 300}, {1, 300}, {2, 300}, {19, 300}, {19, 3000}, {200, 1e4},
	}
	for _, tt := range tests {
		if got, want := arrivalSpare(tt.m, tt.worth), brute(tt.m, tt.worth); got != want {
			t.Errorf("arrivalSpare(%v, %v) = %v, want %v", tt.m, tt.worth, got, want)
		}
	}
}

func TestDeciderDoesNotAllocate(t *testing.T) {
	r := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	r.run(0, 120, constant(Sample{Concurrency: 3, Requests: 3}))
	sec := 120
	allocs := testing.AllocsPerRun(100, func() {
		r.d.Record(at(sec), Sample{Concurrency: 3, Requests: 3})
		r.d.Scale(at(sec), 5)
		sec++
	})
	if allocs != 0 {
		t.Errorf("Record+Scale allocate %v times per tick, want 0", allocs)
	}
}

func TestDeciderPanicScaleUpPricesSparesOnTheStableRate(t *testing.T) {
	// One 1-second request every 5 minutes. The panic window (6s) sees it
	// as ten requests a minute and would price two spares on that; the
	// stable window's rate, one a minute, is worth one spare at most.
	r := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	r.run(0, 1211, timer(10, 310, 610, 910, 1210))
	for _, sec := range []int{310, 610, 910, 1210} {
		if d := r.dec[sec]; d.Desired > 2 {
			t.Errorf("t=%d: a lone request got %+v, want at most 2 replicas", sec, summary(d))
		}
	}

	// A real burst still scales up on the panic window, within it.
	b := newRig(t, DefaultConfig(), Policy{ContainerConcurrency: 1})
	b.run(0, 300, func(sec int) Sample {
		if sec >= 200 {
			return Sample{Concurrency: 20, Requests: 20}
		}
		return Sample{Concurrency: 1, Requests: 1}
	})
	if d, want := b.dec[205], int(math.Ceil(20/0.7)); d.Desired < want {
		t.Errorf("5s into a step from 1 to 20 in flight got %+v, want at least %d replicas", summary(d), want)
	}
}
