package autoscaler

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func newHist(t *testing.T, idle ...time.Duration) *IdleHistogram {
	t.Helper()
	cfg := DefaultConfig().KeepAlive
	h, err := NewIdleHistogram(cfg.BucketWidth, cfg.Range)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range idle {
		h.Add(d)
	}
	return h
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestNewIdleHistogramRejectsBadShape(t *testing.T) {
	for _, c := range []struct{ width, rng time.Duration }{{0, time.Hour}, {time.Minute, time.Second}, {time.Nanosecond, time.Hour}} {
		if _, err := NewIdleHistogram(c.width, c.rng); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewIdleHistogram(%v, %v) = %v, want ErrInvalidConfig", c.width, c.rng, err)
		}
	}
}

func TestIdleHistogramCounts(t *testing.T) {
	h := newHist(t, append(repeat(90*time.Second, 10), 5*time.Minute, -time.Second, 4*time.Hour, 5*time.Hour)...)
	type summary struct {
		Count, OOB, Buckets int
		P5lo, P5hi, P99hi   time.Duration
		P100lo, P0lo, P50hi time.Duration
	}
	got := summary{Count: h.Count(), OOB: h.OutOfBounds(), Buckets: h.Buckets()}
	got.P5lo, got.P5hi = h.Percentile(5)
	_, got.P99hi = h.Percentile(99)
	got.P100lo, _ = h.Percentile(100)
	got.P0lo, _ = h.Percentile(0)
	_, got.P50hi = h.Percentile(50)
	want := summary{
		Count: 12, OOB: 2, Buckets: 240,
		// 12 in range: -1s (bucket 0), 10 x 90s (bucket 1), 5m (bucket 5).
		P5lo: 0, P5hi: time.Minute, P99hi: 6 * time.Minute,
		P100lo: 5 * time.Minute, P0lo: 0, P50hi: 2 * time.Minute,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("histogram mismatch (-want +got):\n%s", diff)
	}
	if lo, hi := newHist(t).Percentile(50); lo != 0 || hi != 0 {
		t.Errorf("empty Percentile(50) = %v, %v, want 0, 0", lo, hi)
	}
}

func TestIdleHistogramCV(t *testing.T) {
	tests := []struct {
		name string
		idle []time.Duration
		want float64
	}{
		{"empty", nil, 0},
		{"a timer", repeat(5*time.Minute, 8), 0},
		{"two values", []time.Duration{time.Minute, 3 * time.Minute}, 0.5},
		{"exponential quantiles", expQuantiles(10*time.Minute, 200), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newHist(t, tt.idle...).CV()
			if math.Abs(got-tt.want) > 0.05 {
				t.Errorf("CV() = %.3f, want %.3f", got, tt.want)
			}
		})
	}
}

// expQuantiles returns n idle times at the quantiles of an exponential
// distribution with the given mean: memoryless arrivals, deterministically.
func expQuantiles(mean time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		u := (float64(i) + 0.5) / float64(n)
		out[i] = time.Duration(-math.Log(1-u) * float64(mean))
	}
	return out
}

func TestIdleHistogramPredict(t *testing.T) {
	cfg := DefaultConfig().KeepAlive
	tests := []struct {
		name string
		idle []time.Duration
		cost time.Duration
		want Prediction
	}{
		{
			name: "too few idle times: fixed keep-alive",
			idle: repeat(5*time.Minute, cfg.MinSamples-1),
			cost: 10 * time.Minute,
			// While learning, also pre-warm again around the idle times
			// seen: the 5m bucket less and plus the 5% margin.
			want: Prediction{Kind: PredictFixed, Until: cfg.Fixed, RepeatFrom: 285 * time.Second, RepeatUntil: 378 * time.Second},
		},
		{
			// 4m30s to 66m would cost more than the one cold start it may
			// save, whatever the next idle time.
			name: "too few idle times, too far apart to pre-warm around: fixed keep-alive only",
			idle: []time.Duration{5 * time.Minute, time.Hour}[:cfg.MinSamples-1],
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictFixed, Until: cfg.Fixed},
		},
		{
			// Idle times of 30m to 60m: a window from 28m30s to 64m3s
			// would have held a replica 17m on average to save a cold
			// start.
			name: "predictable, but the window costs more than its cold starts: release",
			idle: evenly(30*time.Minute, 60*time.Minute, 11),
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictRelease},
		},
		{
			name: "predictable, and a cold start is worth more than the window: pre-warm",
			idle: evenly(30*time.Minute, 60*time.Minute, 11),
			cost: 30 * time.Minute,
			want: Prediction{Kind: PredictPrewarm, Prewarm: 28*time.Minute + 30*time.Second, Until: 64*time.Minute + 3*time.Second},
		},
		{
			name: "timer: pre-warm at the head less the margin, keep to the tail plus it",
			idle: append(repeat(4*time.Minute+30*time.Second, 10), repeat(5*time.Minute+10*time.Second, 10)...),
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictPrewarm, Prewarm: 228 * time.Second, Until: 378 * time.Second},
		},
		{
			name: "head in the first bucket: keep-alive to the tail",
			idle: append(repeat(30*time.Second, 10), repeat(40*time.Second, 10)...),
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictKeepAlive, Until: 63 * time.Second},
		},
		{
			name: "mostly beyond the range: release",
			idle: append(repeat(5*time.Hour, 4), repeat(time.Hour, 3)...),
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictRelease},
		},
		{
			name: "spread, uses often soon after the last: keep while it pays",
			idle: []time.Duration{70 * time.Second, 80 * time.Second, 90 * time.Second, 100 * time.Second, 30 * time.Minute, time.Hour, 90 * time.Minute, 2 * time.Hour},
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictFixed, Until: 2 * time.Minute},
		},
		{
			name: "spread and long: keeping does not pay",
			idle: []time.Duration{5 * time.Minute, 20 * time.Minute, 40 * time.Minute, 60 * time.Minute, 80 * time.Minute, 100 * time.Minute},
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictFixed, Until: 0},
		},
		{
			// The longest of these idle times is 9m12s: keeping a replica
			// through it costs less than the cold start it saves.
			name: "memoryless, mean below the cost of a cold start: keep past the longest",
			idle: expQuantiles(2*time.Minute, 50),
			cost: 10 * time.Minute,
			want: Prediction{Kind: PredictFixed, Until: 10 * time.Minute},
		},
		{
			name: "spread without a cost: fixed keep-alive",
			idle: []time.Duration{5 * time.Minute, 20 * time.Minute, 40 * time.Minute, 60 * time.Minute, 80 * time.Minute, 100 * time.Minute},
			want: Prediction{Kind: PredictFixed, Until: cfg.Fixed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newHist(t, tt.idle...).Predict(cfg, tt.cost)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Predict() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// evenly returns n idle times from lo to hi, evenly spaced.
func evenly(lo, hi time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = lo + (hi-lo)*time.Duration(i)/time.Duration(n-1)
	}
	return out
}

func TestIdleHistogramCloneIsIndependent(t *testing.T) {
	h := newHist(t, time.Minute)
	c := h.Clone()
	c.Add(2 * time.Minute)
	if h.Count() != 1 || c.Count() != 2 {
		t.Errorf("counts after adding to the clone: original %d, clone %d; want 1, 2", h.Count(), c.Count())
	}
}
