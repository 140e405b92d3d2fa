package autoscaler

import (
	"fmt"
	"math"
	"time"
)

// IdleHistogram counts the idle times between a function's uses in buckets
// of equal width up to a range; longer idle times are counted as out of
// bounds. It is the range-limited histogram of Shahrad et al., "Serverless
// in the Wild" (USENIX ATC 2020), 1-minute buckets over 4 hours by default.
// Adding is O(1); percentiles and the CV are O(buckets).
//
// The zero value is not usable; make one with NewIdleHistogram. An
// IdleHistogram is not safe for concurrent use.
type IdleHistogram struct {
	width  time.Duration
	counts []uint64
	total  uint64  // in range
	oob    uint64  // out of bounds
	maxBin int     // highest non-empty bucket, -1 when empty
	sum    float64 // of in-range idle times, seconds
	sumSq  float64 // of their squares
}

// NewIdleHistogram returns an empty histogram of buckets width wide that
// holds idle times shorter than rng. It returns an error when width is not
// positive or rng is shorter than width.
func NewIdleHistogram(width, rng time.Duration) (*IdleHistogram, error) {
	if width <= 0 || rng < width || rng/width > maxBuckets {
		return nil, fmt.Errorf("%w: idle histogram: bucket width %v, range %v: need 0 < width <= range <= %d buckets", ErrInvalidConfig, width, rng, maxBuckets)
	}
	n := int(rng / width)
	return &IdleHistogram{width: width, counts: make([]uint64, n), maxBin: -1}, nil
}

// Add counts one idle time. Negative idle times count as zero.
func (h *IdleHistogram) Add(idle time.Duration) {
	b := 0
	if idle > 0 {
		b = int(idle / h.width)
	}
	if idle > 0 && idle/h.width >= time.Duration(len(h.counts)) {
		h.oob++
		return
	}
	h.counts[b]++
	h.total++
	h.maxBin = max(h.maxBin, b)
	sec := max(idle, 0).Seconds()
	h.sum += sec
	h.sumSq += sec * sec
}

// Count returns the number of idle times in range.
func (h *IdleHistogram) Count() int { return int(h.total) }

// OutOfBounds returns the number of idle times at or beyond the range.
func (h *IdleHistogram) OutOfBounds() int { return int(h.oob) }

// Buckets returns the number of buckets.
func (h *IdleHistogram) Buckets() int { return len(h.counts) }

// Width returns the width of one bucket.
func (h *IdleHistogram) Width() time.Duration { return h.width }

// Percentile returns the bounds [lower, upper) of the bucket holding the
// p-th percentile (0 < p <= 100) of the in-range idle times, by the
// nearest-rank method. It returns zeros when the histogram is empty.
func (h *IdleHistogram) Percentile(p float64) (lower, upper time.Duration) {
	if h.total == 0 {
		return 0, 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(i) * h.width, time.Duration(i+1) * h.width
		}
	}
	// Unreachable: the counts sum to total.
	return time.Duration(h.maxBin) * h.width, time.Duration(h.maxBin+1) * h.width
}

// CV returns the coefficient of variation (standard deviation over mean)
// of the in-range idle times: near 0 for a timer, 1 for memoryless
// (Poisson) arrivals, above 1 for bursts. It returns 0 when the histogram
// is empty or all idle times are zero.
func (h *IdleHistogram) CV() float64 {
	if h.total == 0 || h.sum == 0 {
		return 0
	}
	n := float64(h.total)
	mean := h.sum / n
	v := max(0, h.sumSq/n-mean*mean)
	return math.Sqrt(v) / mean
}

// Clone returns an independent copy of h.
func (h *IdleHistogram) Clone() *IdleHistogram {
	c := *h
	c.counts = append([]uint64(nil), h.counts...)
	return &c
}

// PredictionKind says what an idle-time histogram predicts about the next
// use.
type PredictionKind int

const (
	// PredictFixed: too few idle times, or too spread, to predict; keep the
	// last replica for the fixed keep-alive. While the histogram is still
	// learning, a replica is also pre-warmed again around the idle times
	// seen so far (see Prediction.RepeatFrom).
	PredictFixed PredictionKind = iota
	// PredictKeepAlive: the next use may come at once (the head percentile
	// is in the first bucket); keep the last replica until the tail.
	PredictKeepAlive
	// PredictPrewarm: the next use comes no sooner than the head; release
	// right after a use, pre-warm shortly before the head, keep until the
	// tail.
	PredictPrewarm
	// PredictRelease: release right after a use and do not pre-warm: most
	// idle times exceed the histogram's range, or keeping a replica costs
	// more than the cold starts it would save.
	PredictRelease
)

// String returns the kind's name.
func (k PredictionKind) String() string {
	switch k {
	case PredictFixed:
		return "fixed"
	case PredictKeepAlive:
		return "keep-alive"
	case PredictPrewarm:
		return "pre-warm"
	case PredictRelease:
		return "release"
	}
	return fmt.Sprintf("PredictionKind(%d)", int(k))
}

// Prediction is when to hold a warm replica after a use, measured from the
// end of that use.
type Prediction struct {
	// Kind is the case that applies.
	Kind PredictionKind
	// Prewarm is when a released replica is started again; zero unless
	// Kind is PredictPrewarm.
	Prewarm time.Duration
	// Until is when the warm replica is released if no use came.
	Until time.Duration
	// Linger is how long replicas stay after a use before they are
	// released, for PredictPrewarm and PredictRelease: long enough to
	// ride out the pauses within a use (see IdleTimes). With a cold-start
	// cost it is the linger that minimises, over the gaps seen, the
	// replica time it keeps after every use plus the cost of each pause it
	// does not cover; without one, the TailPercentile of the pauses.
	// Either is widened by Margin and capped at a bucket.
	Linger time.Duration
	// RepeatFrom and RepeatUntil bound a second window, after the fixed
	// keep-alive, in which a replica is pre-warmed again: from the
	// shortest to the longest idle time seen so far, widened by Margin.
	// They are set only for PredictFixed while the histogram holds fewer
	// than MinSamples idle times but at least one: many callers are
	// periodic, and waiting for the histogram would make their next uses
	// cold (a timer every 15 minutes outlives a 10-minute keep-alive).
	RepeatFrom, RepeatUntil time.Duration
}

// Predict applies the hybrid histogram policy of Shahrad et al.:
//
//   - fewer than MinSamples idle times: the fixed keep-alive cfg.Fixed,
//     and a pre-warm again from the shortest to the longest idle time
//     seen so far, widened by Margin;
//   - more than MaxOutOfBounds of the idle times beyond the range: release
//     at once, no pre-warm;
//   - idle times with a coefficient of variation above MaxCV (too spread to
//     predict): a keep-alive without pre-warm, the one that minimises the
//     replica time kept plus coldStartCost per cold start over the idle
//     times seen (the ski-rental trade-off; for memoryless arrivals it
//     keeps the replica when the mean idle time is below coldStartCost and
//     releases it at once otherwise), or cfg.Fixed if coldStartCost is 0;
//   - otherwise head = lower bound of the HeadPercentile bucket and tail =
//     upper bound of the TailPercentile bucket, widened by Margin:
//     pre-warm at head*(1-Margin) and release at tail*(1+Margin); a head of
//     zero means keep the replica from the end of the use. When that
//     window would have cost more replica time over the idle times seen
//     than coldStartCost per cold start it saved, release instead.
func (h *IdleHistogram) Predict(cfg KeepAliveConfig, coldStartCost time.Duration) Prediction {
	fixed := Prediction{Kind: PredictFixed, Until: cfg.Fixed}
	all := h.total + h.oob
	if all < uint64(cfg.MinSamples) {
		if h.total > 0 {
			shortest, _ := h.Percentile(0)
			_, longest := h.Percentile(100)
			from := time.Duration(float64(shortest) * (1 - cfg.Margin))
			until := time.Duration(float64(longest) * (1 + cfg.Margin))
			// Too few idle times to price the window on: it saves at most
			// one cold start, so it may cost at most one.
			budget := coldStartCost
			if budget <= 0 {
				budget = cfg.Fixed
			}
			if until-from <= budget {
				fixed.RepeatFrom, fixed.RepeatUntil = from, until
			}
		}
		return fixed
	}
	if float64(h.oob) > cfg.MaxOutOfBounds*float64(all) {
		return Prediction{Kind: PredictRelease}
	}
	if h.CV() > cfg.MaxCV {
		if coldStartCost <= 0 {
			return fixed
		}
		return Prediction{Kind: PredictFixed, Until: h.cheapestKeepAlive(coldStartCost, 0)}
	}
	head, _ := h.Percentile(cfg.HeadPercentile)
	_, tail := h.Percentile(cfg.TailPercentile)
	until := time.Duration(float64(tail) * (1 + cfg.Margin))
	prewarm := time.Duration(float64(head) * (1 - cfg.Margin))
	if coldStartCost > 0 && !h.windowPays(max(prewarm, 0), until, coldStartCost) {
		return Prediction{Kind: PredictRelease}
	}
	if prewarm <= 0 {
		return Prediction{Kind: PredictKeepAlive, Until: until}
	}
	return Prediction{Kind: PredictPrewarm, Prewarm: prewarm, Until: until}
}

// windowPays reports whether holding a replica from `from` to `until` after
// each use would have cost less replica time, over the idle times seen
// (each at the middle of its bucket, out of bounds ones as longer than
// until), than the cold starts it saved are worth at cost each.
func (h *IdleHistogram) windowPays(from, until, cost time.Duration) bool {
	w := h.width.Seconds()
	f, u := from.Seconds(), until.Seconds()
	var kept, saved float64
	for j, c := range h.counts {
		if c == 0 {
			continue
		}
		x := (float64(j) + 0.5) * w
		switch {
		case x < f:
		case x < u:
			kept += float64(c) * (x - f)
			saved += float64(c)
		default:
			kept += float64(c) * (u - f)
		}
	}
	kept += float64(h.oob) * (u - f)
	return kept < saved*cost.Seconds()
}

// cheapestKeepAlive returns the keep-alive K, a multiple of the bucket
// width up to the range, that minimises the sum over the idle times x seen
// of min(x, K) (replica time kept) plus cost for each x > K (a cold
// start), taking each idle time at the middle of its bucket and out of
// bounds ones as longer than the range. free more gaps, all longer than
// the range, are kept K too, but a cold start after them is not charged:
// keeping cannot save it (IdleTimes prices a use's linger so, the idle
// times between uses being longer than any pause). Ties go to the
// shorter K.
func (h *IdleHistogram) cheapestKeepAlive(cost time.Duration, free float64) time.Duration {
	w := h.width.Seconds()
	v := cost.Seconds()
	n := float64(h.total + h.oob)
	best, bestCost := 0, n*v // K = 0: every idle time ends in a cold start
	var kept, below float64  // sum of idle times below K, and their count
	for j := 1; j <= len(h.counts); j++ {
		c := float64(h.counts[j-1])
		kept += c * (float64(j) - 0.5) * w
		below += c
		k := float64(j) * w
		if total := kept + (n-below)*(k+v) + free*k; total < bestCost {
			best, bestCost = j, total
		}
	}
	return time.Duration(best) * h.width
}
