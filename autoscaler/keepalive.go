package autoscaler

import (
	"fmt"
	"time"
)

// IdleTimes learns when a function is used: the gaps between its periods
// of traffic, at two resolutions. Gaps shorter than one bucket of the
// idle-time histogram are pauses within a use; the histogram, whose
// resolution is a bucket, could not time them. They go to a histogram of
// sample-period buckets, whose tail says how long a use may pause before
// it is over. Longer gaps are idle times between uses and go to the
// range-limited histogram of Shahrad et al. (1-minute buckets over 4
// hours by default), whose head and tail say when the next use comes.
//
// An IdleTimes is not safe for concurrent use.
type IdleTimes struct {
	cfg    KeepAliveConfig
	cost   time.Duration  // of a cold start, for Predict
	idle   *IdleHistogram // gaps >= cfg.BucketWidth
	pauses *IdleHistogram // gaps < cfg.BucketWidth, in sample periods
	pred   Prediction     // cached; recomputed on Add
}

// NewIdleTimes returns an empty IdleTimes for cfg, resolving pauses to
// period and weighing a cold start as coldStartCost of replica time (see
// IdleHistogram.Predict). It returns an error wrapping ErrInvalidConfig
// when cfg is invalid or period is not positive.
func NewIdleTimes(cfg KeepAliveConfig, period, coldStartCost time.Duration) (*IdleTimes, error) {
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("new idle times: %w", errs[0])
	}
	if period <= 0 || period > cfg.BucketWidth {
		return nil, fmt.Errorf("new idle times: %w: sample period %v: must be positive and at most KeepAlive.BucketWidth (%v)", ErrInvalidConfig, period, cfg.BucketWidth)
	}
	idle, err := NewIdleHistogram(cfg.BucketWidth, cfg.Range)
	if err != nil {
		return nil, fmt.Errorf("new idle times: %w", err)
	}
	pauses, err := NewIdleHistogram(period, cfg.BucketWidth)
	if err != nil {
		return nil, fmt.Errorf("new idle times: %w", err)
	}
	if coldStartCost < 0 {
		return nil, fmt.Errorf("new idle times: %w: cold start cost %v: must not be negative", ErrInvalidConfig, coldStartCost)
	}
	t := &IdleTimes{cfg: cfg, cost: coldStartCost, idle: idle, pauses: pauses}
	t.pred = t.predict()
	return t, nil
}

// Add records a gap between two periods of traffic. It reports whether the
// gap was long enough to end a use (an idle time rather than a pause).
func (t *IdleTimes) Add(gap time.Duration) (idle bool) {
	if gap <= 0 {
		return false
	}
	if gap < t.cfg.BucketWidth {
		t.pauses.Add(gap)
	} else {
		t.idle.Add(gap)
		idle = true
	}
	t.pred = t.predict()
	return idle
}

// Idle returns the histogram of idle times between uses.
func (t *IdleTimes) Idle() *IdleHistogram { return t.idle }

// Pauses returns the histogram of pauses within uses.
func (t *IdleTimes) Pauses() *IdleHistogram { return t.pauses }

// Prediction returns what the gaps seen so far predict.
func (t *IdleTimes) Prediction() Prediction { return t.pred }

// Clone returns an independent copy of t.
func (t *IdleTimes) Clone() *IdleTimes {
	c := *t
	c.idle = t.idle.Clone()
	c.pauses = t.pauses.Clone()
	return &c
}

func (t *IdleTimes) predict() Prediction {
	p := t.idle.Predict(t.cfg, t.cost)
	if p.Kind == PredictFixed && p.Until == 0 && p.RepeatUntil == 0 {
		p.Kind = PredictRelease // keeping is not worth it: release
	}
	if p.Kind == PredictPrewarm || p.Kind == PredictRelease {
		// Release only after a pause longer than the uses' pauses, at most
		// a bucket (then the gap is an idle time and the histogram rules).
		if t.pauses.Count() > 0 {
			var tail time.Duration
			if t.cost > 0 {
				// The linger that pays at the cold-start cost: pauses
				// longer than it end in a cold start, and it is kept after
				// every use (each idle time).
				tail = t.pauses.cheapestKeepAlive(t.cost, float64(t.idle.Count()+t.idle.OutOfBounds()))
			} else {
				_, tail = t.pauses.Percentile(t.cfg.TailPercentile)
			}
			p.Linger = min(time.Duration(float64(tail)*(1+t.cfg.Margin)), t.cfg.BucketWidth)
		}
		if p.Kind == PredictPrewarm && p.Prewarm <= p.Linger {
			// The next use may come before the replicas would be released.
			return Prediction{Kind: PredictKeepAlive, Until: p.Until}
		}
	}
	return p
}
