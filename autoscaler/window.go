package autoscaler

import "math"

// scale is the fixed-point unit of window sums: values are kept in
// millionths so that adding and removing buckets is exact and an idle
// window sums to exactly zero (float running sums drift and would keep a
// revision at one replica forever).
const scale = 1e6

func fixed(v float64) int64 {
	if !(v > 0) {
		return 0
	}
	if v > math.MaxInt64/(4*scale) {
		return math.MaxInt64 / 4
	}
	return int64(math.Round(v * scale))
}

// vec is one bucket's values, in millionths.
type vec struct {
	demand   int64 // in-flight + queued requests
	requests int64 // requests that arrived
	cpu      int64 // cores
}

func (a *vec) add(b vec) { a.demand += b.demand; a.requests += b.requests; a.cpu += b.cpu }
func (a *vec) sub(b vec) { a.demand -= b.demand; a.requests -= b.requests; a.cpu -= b.cpu }

// windows is a ring of per-period buckets with running sums over the last
// stable and panic buckets, so a decision is O(1) whatever the window.
// Bucket numbers are time divided by the sample period; missing buckets are
// zeros.
type windows struct {
	ring    []vec // len = stable buckets
	panicN  int64
	head    int64 // newest bucket number
	first   int64 // first bucket number ever seen
	started bool
	stable  vec
	panic   vec
}

func newWindows(stableBuckets, panicBuckets int) *windows {
	return &windows{ring: make([]vec, stableBuckets), panicN: int64(panicBuckets)}
}

func (w *windows) slot(b int64) *vec {
	n := int64(len(w.ring))
	return &w.ring[((b%n)+n)%n]
}

// advance moves the newest bucket to b, dropping buckets that leave the
// windows. It does nothing for b at or before the newest bucket.
func (w *windows) advance(b int64) {
	if !w.started {
		w.head, w.first, w.started = b, b, true
		return
	}
	if b <= w.head {
		return
	}
	n := int64(len(w.ring))
	if b-w.head >= n {
		clear(w.ring)
		w.stable, w.panic = vec{}, vec{}
		w.head = b
		return
	}
	for i := w.head + 1; i <= b; i++ {
		// Bucket i-panicN leaves the panic window; bucket i-n (in i's slot)
		// leaves the stable window.
		w.panic.sub(*w.slot(i - w.panicN))
		s := w.slot(i)
		w.stable.sub(*s)
		*s = vec{}
	}
	w.head = b
}

// add adds v to bucket b. Buckets older than the stable window are dropped.
func (w *windows) add(b int64, v vec) {
	w.advance(b)
	if b <= w.head-int64(len(w.ring)) {
		return
	}
	w.slot(b).add(v)
	w.stable.add(v)
	if b > w.head-w.panicN {
		w.panic.add(v)
	}
}

// filled returns how many of the last k buckets the windows have existed
// for, so that a young revision averages over what it has seen.
func (w *windows) filled(k int64) int64 {
	return max(1, min(k, w.head-w.first+1))
}

// averages returns the per-bucket averages of the stable and panic windows.
func (w *windows) averages() (stable, panic avg) {
	ns := float64(w.filled(int64(len(w.ring))))
	np := float64(w.filled(w.panicN))
	return avgOf(w.stable, ns), avgOf(w.panic, np)
}

type avg struct{ demand, requests, cpu float64 }

func avgOf(v vec, n float64) avg {
	return avg{
		demand:   float64(v.demand) / scale / n,
		requests: float64(v.requests) / scale / n,
		cpu:      float64(v.cpu) / scale / n,
	}
}
