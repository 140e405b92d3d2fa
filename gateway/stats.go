package gateway

import (
	"sync/atomic"
	"time"

	"github.com/surgeplatform/surge/api"
)

// revStats accumulates one revision's load, lock-free.
//
// Average concurrency is the integral of the in-flight count over a window
// divided by its length. The integral is kept exactly: state packs the
// in-flight count and the time of the last change into one word, and every
// change swaps it with a compare-and-swap and adds count × elapsed to area.
// The intervals between changes thus partition the time line, each counted
// once with the count that held during it.
type revStats struct {
	requests atomic.Int64
	state    atomic.Uint64 // last change (µs, low 44 bits) << 20 | in-flight (20 bits)
	area     atomic.Int64  // ∫ in-flight dt, in request·µs
}

const (
	statsCountBits = 20
	statsCountMask = 1<<statsCountBits - 1
	statsTimeMask  = 1<<(64-statsCountBits) - 1 // µs; wraps after ~203 days, deltas stay right
)

// step moves the in-flight count by delta at t (µs since the gateway's
// epoch) and accrues the area since the last change.
func (s *revStats) step(t int64, delta int64) {
	tt := uint64(t) & statsTimeMask
	for {
		old := s.state.Load()
		last := old >> statsCountBits
		n := int64(old & statsCountMask)
		elapsed := (tt - last) & statsTimeMask
		if elapsed > statsTimeMask/2 {
			// Our clock read lost a race with a later one: no time passed.
			elapsed, tt = 0, last
		}
		nn := n + delta
		if nn < 0 || nn > statsCountMask {
			nn = n // cannot happen with matched begin/end; do not corrupt the time field
		}
		if s.state.CompareAndSwap(old, tt<<statsCountBits|uint64(nn)) {
			if n > 0 && elapsed > 0 {
				s.area.Add(n * int64(elapsed))
			}
			return
		}
	}
}

// begin counts a request arriving for the revision at t.
func (s *revStats) begin(t int64) {
	s.requests.Add(1)
	s.step(t, 1)
}

// end counts a request leaving at t.
func (s *revStats) end(t int64) { s.step(t, -1) }

func (s *revStats) inFlight() int64 { return int64(s.state.Load() & statsCountMask) }

// revOutcomes counts how a revision's requests ended, for the rollout
// controller's canary analysis (api.Outcomes): cumulative and lock-free,
// a few atomic adds per request.
type revOutcomes struct {
	requests, errors atomic.Int64
	latency          [api.LatencyBuckets]atomic.Int64
}

// record counts a request that took d (see exchange.answered) and, when
// failed, as an error.
func (o *revOutcomes) record(d time.Duration, failed bool) {
	o.latency[api.LatencyBucket(d)].Add(1)
	if failed {
		o.errors.Add(1)
	}
	o.requests.Add(1)
}

// snapshot reads the counters, without their trailing empty buckets. The
// reads are not one atomic step: a request that ends meanwhile may be in
// the histogram and not yet in Requests, which the next snapshot settles.
func (o *revOutcomes) snapshot() api.Outcomes {
	out := api.Outcomes{Requests: o.requests.Load(), Errors: o.errors.Load()}
	n := 0
	for i := range o.latency {
		if o.latency[i].Load() > 0 {
			n = i + 1
		}
	}
	if n > 0 {
		out.Latency = make([]int64, n)
		for i := range out.Latency {
			out.Latency[i] = o.latency[i].Load()
		}
	}
	return out
}

// RevisionStats is one revision's load over one window, as this gateway saw
// it; the autoscaler sums them over gateways.
type RevisionStats struct {
	Namespace, Function, Revision string
	// Window is the length of the period the numbers cover.
	Window time.Duration
	// AverageConcurrency is the time-weighted mean of requests in flight
	// for the revision, queued ones included (they are demand too).
	AverageConcurrency float64
	// Requests is how many requests arrived in the window.
	Requests int64
	// InFlight and QueueLength are the counts at the window's end.
	InFlight    int64
	QueueLength int64
	// Outcomes counts how the revision's requests ended at this gateway,
	// since it began routing the revision (not per window); zero until
	// one ended.
	Outcomes api.Outcomes
}

// StatsSink receives each window's stats, for the autoscaler wiring.
type StatsSink interface {
	// ReportStats is called from the gateway's stats goroutine once per
	// Config.StatsInterval with a fresh slice the sink may keep. It should
	// not block for long: the next window waits for it.
	ReportStats(stats []RevisionStats)
}

// statsCollector turns the revisions' running counters into per-window
// numbers. It is used from one goroutine.
type statsCollector struct {
	epoch time.Time
	last  time.Time
	prev  map[*revision]statsMark
}

type statsMark struct{ area, requests int64 }

func newStatsCollector(epoch time.Time) *statsCollector {
	return &statsCollector{epoch: epoch, last: epoch, prev: map[*revision]statsMark{}}
}

func (c *statsCollector) micros(t time.Time) int64 { return t.Sub(c.epoch).Microseconds() }

// collect closes the window ending at now for the given revisions.
func (c *statsCollector) collect(now time.Time, revs []*revision) []RevisionStats {
	window := now.Sub(c.last)
	c.last = now
	t := c.micros(now)
	out := make([]RevisionStats, 0, len(revs))
	next := make(map[*revision]statsMark, len(revs))
	for _, r := range revs {
		r.stats.step(t, 0) // accrue the area up to now
		m := statsMark{area: r.stats.area.Load(), requests: r.stats.requests.Load()}
		p, seen := c.prev[r]
		if !seen {
			p = statsMark{} // a new revision's counters started at zero
		}
		next[r] = m
		st := RevisionStats{
			Namespace:   r.key.Namespace,
			Function:    r.function,
			Revision:    r.key.Name,
			Window:      window,
			Requests:    m.requests - p.requests,
			InFlight:    r.stats.inFlight(),
			QueueLength: r.queue.length(),
		}
		if r.outcomes.requests.Load() > 0 {
			st.Outcomes = r.outcomes.snapshot()
		}
		if us := window.Microseconds(); us > 0 {
			st.AverageConcurrency = float64(m.area-p.area) / float64(us)
		}
		out = append(out, st)
	}
	c.prev = next
	return out
}
