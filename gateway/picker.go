package gateway

// Picker chooses the replica of a revision that gets a request. It is a
// pure decision over the endpoints' atomic counters: no I/O, no clock, no
// lock. Implementations are called concurrently from request goroutines.
type Picker interface {
	// Pick returns one of eps that is eligible at now (unix nanoseconds:
	// not draining, not ejected) and under its concurrency limit, with one
	// of its slots already taken (release it with Endpoint.release), or nil
	// when none has room. avoid (a replica that just failed this request)
	// is taken only when nothing else is. rnd is fresh random bits for
	// sampling and for breaking ties.
	Pick(eps []*Endpoint, avoid *Endpoint, now int64, rnd uint64) *Endpoint
}

var (
	_ Picker = P2C{}
	_ Picker = LeastLoaded{}
)

// P2C is the power of two choices (Mitzenmacher, "The Power of Two Choices
// in Randomized Load Balancing", 2001): sample two replicas, send to the
// one with fewer requests in flight. It is O(1) and, unlike a global least
// loaded pick, does not herd every gateway onto the same replica. When
// sampling finds no replica with room it falls back to LeastLoaded's scan,
// so a free slot anywhere is always found.
type P2C struct{}

// Pick implements Picker.
func (P2C) Pick(eps []*Endpoint, avoid *Endpoint, now int64, rnd uint64) *Endpoint {
	n := len(eps)
	if n >= 2 {
		r := rnd
		for round := 0; round < 2; round++ {
			i := int(r % uint64(n))
			j := int((r >> 20) % uint64(n-1))
			if j >= i {
				j++
			}
			r = mix(r)
			a, b := eps[i], eps[j]
			ua := usable(a, avoid, now)
			ub := usable(b, avoid, now)
			var c *Endpoint
			switch {
			case ua && ub:
				la, lb := a.inflight.Load(), b.inflight.Load()
				switch {
				case la < lb:
					c = a
				case lb < la:
					c = b
				case r&1 == 0:
					c = a
				default:
					c = b
				}
			case ua:
				c = a
			case ub:
				c = b
			}
			if c != nil && c.tryAcquire() {
				return c
			}
		}
	}
	return LeastLoaded{}.Pick(eps, avoid, now, rnd)
}

// LeastLoaded scans every replica and takes the one with the fewest
// requests in flight, ties broken uniformly at random (reservoir sampling).
// It is exact but O(n) and herds when many gateways see the same counts.
type LeastLoaded struct{}

// Pick implements Picker.
func (LeastLoaded) Pick(eps []*Endpoint, avoid *Endpoint, now int64, rnd uint64) *Endpoint {
	// A slot seen free may be taken by another goroutine before our
	// compare-and-swap; scan again a few times before giving up.
	for attempt := 0; attempt < 4; attempt++ {
		var best *Endpoint
		var bestLoad int64
		ties := uint64(0)
		r := rnd + uint64(attempt)
		for _, e := range eps {
			if !usable(e, avoid, now) {
				continue
			}
			l := e.inflight.Load()
			switch {
			case best == nil || l < bestLoad:
				best, bestLoad, ties = e, l, 1
			case l == bestLoad:
				ties++
				r = mix(r)
				if r%ties == 0 {
					best = e
				}
			}
		}
		if best == nil {
			break
		}
		if best.tryAcquire() {
			return best
		}
	}
	// Only the replica that just failed is left, or nothing at all.
	if avoid != nil && avoid.eligible(now) && containsEndpoint(eps, avoid) && avoid.tryAcquire() {
		return avoid
	}
	return nil
}

func usable(e, avoid *Endpoint, now int64) bool {
	return e != avoid && e.eligible(now) && e.hasRoom()
}

func containsEndpoint(eps []*Endpoint, e *Endpoint) bool {
	for _, x := range eps {
		if x == e {
			return true
		}
	}
	return false
}

// mix is splitmix64's finalizer: it turns one random word into another, so
// a single draw from the caller's source serves several decisions.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// target is one revision's share of a function's traffic, as the upper
// bound of its slice of [0, total).
type target struct {
	rev *revision
	cum uint32
}

// pickTarget chooses a revision by traffic weight.
func pickTarget(ts []target, rnd uint64) *revision {
	if len(ts) == 0 {
		return nil
	}
	total := ts[len(ts)-1].cum
	if total == 0 {
		return nil
	}
	x := uint32(rnd % uint64(total))
	for _, t := range ts {
		if x < t.cum {
			return t.rev
		}
	}
	return ts[len(ts)-1].rev
}
