package gateway

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/internal/backoff"
)

// Endpoint is one replica the gateway proxies to. It outlives routing
// snapshots: every snapshot that lists the replica points at the same
// Endpoint, so its in-flight count, ejection state and connection pool
// carry over from one snapshot to the next.
type Endpoint struct {
	addr  string
	name  string // the replica's, for Surge-Served-By
	limit int64  // concurrency limit; 0 = unlimited
	rev   *revision
	hc    *fasthttp.HostClient // nil in pure tests

	inflight atomic.Int64
	// draining is set when the replica leaves the ready set (Terminating,
	// deleted, its node dead): no new requests; failures of idempotent
	// requests on it are retried elsewhere.
	draining atomic.Bool

	fails        atomic.Int32 // consecutive failures: see failed
	ejections    atomic.Int32 // consecutive ejections, for the back-off
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 = never ejected
	// dead is set by an ejection for a refused connection: the replica's
	// process is gone, and the replica returns when its sources report it
	// Ready again (Routes clears it), not when a back-off ends.
	dead atomic.Bool
}

// Addr is the replica's ip:port.
func (e *Endpoint) Addr() string { return e.addr }

// InFlight is how many requests the gateway has on the replica now.
func (e *Endpoint) InFlight() int64 { return e.inflight.Load() }

// eligible reports whether the endpoint may take a new request at now
// (unix nanoseconds), ignoring its concurrency limit.
func (e *Endpoint) eligible(now int64) bool {
	return !e.draining.Load() && e.ejectedUntil.Load() <= now
}

// hasRoom reports whether the endpoint is under its concurrency limit.
func (e *Endpoint) hasRoom() bool {
	return e.limit == 0 || e.inflight.Load() < e.limit
}

// tryAcquire takes one of the endpoint's concurrency slots, or reports
// that none is free. The compare-and-swap makes the limit exact under
// races between gateways' goroutines.
func (e *Endpoint) tryAcquire() bool {
	if e.limit == 0 {
		e.inflight.Add(1)
		return true
	}
	for {
		n := e.inflight.Load()
		if n >= e.limit {
			return false
		}
		if e.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release returns a slot taken by tryAcquire and hands it to a queued
// request of the revision, if any waits.
func (e *Endpoint) release() {
	e.inflight.Add(-1)
	if r := e.rev; r != nil && r.queue.waiting() {
		r.queue.wakeOne()
	}
}

// ejectPolicy is outlier ejection's configuration.
type ejectPolicy struct {
	// after is the failures in a row that eject a replica.
	after int32
	// backoff is the length of consecutive ejections: Delay(1) the first.
	// It has no jitter: a replica's ejections are its own, not a crowd's.
	// Its Max also bounds a dead replica's ejection (see failed).
	backoff    backoff.Policy
	maxPercent int
}

// failed records a failed attempt on e at now — a refused or failed
// connection, a connection reset or cut before the answer, a timeout, or a
// 5xx answer — and ejects e when it has failed p.after times in a row, as
// Envoy's consecutive_5xx outlier detection does (once, right after a
// previous ejection ended: it is on probation), or at once when dead (the
// replica refused a connection: nothing listens at its address any more).
// An ejection lasts p.backoff.Delay(k) for the k-th in a row; a dead one
// lasts until the replica is reported Ready again (Routes.rebuild ends
// it), or, should no report come (the network failed, not the replica),
// p.backoff.Max, after which the replica is on probation. No more than
// p.maxPercent of peers (e's revision's endpoints, e among them) are
// ejected at once. It reports whether e was ejected.
func (e *Endpoint) failed(now time.Time, peers []*Endpoint, p ejectPolicy, dead bool) bool {
	n := e.fails.Add(1)
	threshold := p.after
	if dead || e.ejections.Load() > 0 {
		threshold = 1
	}
	if n < threshold {
		return false
	}
	nowN := now.UnixNano()
	if e.ejectedUntil.Load() > nowN {
		return false // another goroutine ejected it already
	}
	ejected := 0
	for _, q := range peers {
		if q != e && q.ejectedUntil.Load() > nowN {
			ejected++
		}
	}
	if (ejected+1)*100 > len(peers)*p.maxPercent {
		return false
	}
	k := e.ejections.Add(1)
	d := p.backoff.Delay(int(k))
	if dead {
		d = p.backoff.Max
		e.dead.Store(true)
	}
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	e.fails.Store(0)
	return true
}

// succeeded records an attempt that got an answer below 500: the failure
// streak and the back-off end. Stores are skipped when nothing changes, to
// keep the endpoint's cache line clean on the hot path.
func (e *Endpoint) succeeded() {
	if e.fails.Load() != 0 {
		e.fails.Store(0)
	}
	if e.ejections.Load() != 0 {
		e.ejections.Store(0)
	}
}

// reportedReady ends a dead replica's ejection: its sources report it
// Ready again. Called by Routes.rebuild, under its lock.
func (e *Endpoint) reportedReady() {
	if e.dead.Load() {
		e.dead.Store(false)
		e.ejectedUntil.Store(0)
		e.ejections.Store(0)
		e.fails.Store(0)
	}
}
