package api

import (
	"math"
	"math/bits"
	"time"
)

// Outcomes counts how a revision's requests ended at one gateway, since
// that gateway began routing the revision: cumulative counters that never
// go down while the gateway runs, so that a reader that misses reports
// loses nothing (it takes the difference with the last one it saw), and a
// reader that sees one go down knows the gateway started again.
type Outcomes struct {
	// Requests is how many requests of the revision ended.
	Requests int64 `json:"requests"`
	// Errors is how many of them were answered 5xx (by the replica, or by
	// the gateway: 502, 503, 504) or failed mid-answer.
	Errors int64 `json:"errors,omitempty"`
	// Latency counts the requests by latency (from the request's arrival
	// to the end of its answer's header, or of its answer when the body
	// came with it) in the buckets of LatencyBucket; trailing empty
	// buckets are left out. Histograms of several gateways merge by
	// adding their buckets (Merge).
	Latency []int64 `json:"latency,omitempty"`
}

// LatencyBuckets is how many latency buckets there are: half-octaves of
// microseconds, from 0 to 2^27µs (134s) and above, so that a quantile is
// known within its bucket — at most half as much again as its low bound —
// whatever the scale, in a few hundred bytes per revision.
const LatencyBuckets = 56

// LatencyBucket returns the bucket that counts a latency of d: 0 for
// under 1µs, then two per power of two, [2^e, 1.5·2^e) and [1.5·2^e,
// 2^(e+1)) µs, the last one open. It allocates nothing.
func LatencyBucket(d time.Duration) int {
	us := d.Microseconds()
	if us <= 0 {
		return 0
	}
	e := bits.Len64(uint64(us)) - 1
	half := 0
	if e >= 1 {
		half = int(uint64(us)>>(e-1)) & 1
	}
	return min(2*e+half+1, LatencyBuckets-1)
}

// LatencyBucketLow is the least latency bucket i counts. (Bucket 2, from
// 1.5µs, counts nothing: latencies are counted in whole microseconds.)
func LatencyBucketLow(i int) time.Duration {
	if i <= 0 {
		return 0
	}
	e, half := (i-1)/2, (i-1)%2
	d := time.Duration(1<<e) * time.Microsecond
	if half == 1 {
		d += d / 2
	}
	return d
}

// latencyBucketHigh is where bucket i ends: the next one's start, or half
// as much again above the last one's.
func latencyBucketHigh(i int) time.Duration {
	if i >= LatencyBuckets-1 {
		return LatencyBucketLow(i) * 3 / 2
	}
	return LatencyBucketLow(i + 1)
}

// Merge adds from's counts to o's: the outcomes of two gateways, or two
// periods, together.
func (o *Outcomes) Merge(from Outcomes) {
	o.Requests += from.Requests
	o.Errors += from.Errors
	if len(from.Latency) > len(o.Latency) {
		o.Latency = append(o.Latency, make([]int64, len(from.Latency)-len(o.Latency))...)
	}
	for i, n := range from.Latency {
		o.Latency[i] += n
	}
}

// Clone returns a copy of o that shares no memory with it.
func (o Outcomes) Clone() Outcomes {
	o.Latency = append([]int64(nil), o.Latency...)
	return o
}

// Since returns what happened between an earlier report prev of the same
// counters and o: their difference, or all of o when a counter went down
// (the gateway started again, its counters with it).
func (o Outcomes) Since(prev Outcomes) Outcomes {
	if o.Requests < prev.Requests || o.Errors < prev.Errors || len(o.Latency) < len(prev.Latency) {
		return o
	}
	out := Outcomes{Requests: o.Requests - prev.Requests, Errors: o.Errors - prev.Errors,
		Latency: make([]int64, len(o.Latency))}
	for i, n := range o.Latency {
		if i < len(prev.Latency) {
			n -= prev.Latency[i]
		}
		if n < 0 {
			return o
		}
		out.Latency[i] = n
	}
	return out
}

// Quantile estimates the q-th quantile (0 < q ≤ 1) of the latencies o
// counts, interpolating within its bucket; 0 when o counts none.
func (o Outcomes) Quantile(q float64) time.Duration {
	var total int64
	for _, n := range o.Latency {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	rank = min(max(rank, 1), total)
	var below int64
	for i, n := range o.Latency {
		if n == 0 || below+n < rank {
			below += n
			continue
		}
		lo, hi := LatencyBucketLow(i), latencyBucketHigh(i)
		frac := float64(rank-below) / float64(n)
		return lo + time.Duration(frac*float64(hi-lo))
	}
	return latencyBucketHigh(len(o.Latency) - 1)
}
