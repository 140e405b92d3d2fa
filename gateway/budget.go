package gateway

import "sync/atomic"

// retryCost is the price of one retry in budget tokens; a request earns
// ratio × retryCost.
const retryCost = 1000

type budgetConfig struct {
	earn  int64 // tokens per request: ratio × retryCost
	burst int64 // tokens at start and at most: burst retries
}

func newBudgetConfig(ratio float64, burst int) budgetConfig {
	return budgetConfig{earn: int64(ratio * retryCost), burst: int64(max(burst, 1)) * retryCost}
}

// retryBudget lets a revision's retries be at most a share of its requests
// (as Finagle's RetryBudget and Envoy's retry budgets do), so retries cannot
// multiply the load on a revision that is failing. It counts requests, not
// time: no clock, no lock, one atomic add per request.
type retryBudget struct {
	tokens atomic.Int64
	cfg    budgetConfig
}

func (b *retryBudget) init(c budgetConfig) {
	b.cfg = c
	b.tokens.Store(c.burst)
}

// deposit is called once per request. The cap can be overshot by the
// requests racing past the load, which is harmless.
func (b *retryBudget) deposit() {
	if b.tokens.Load() >= b.cfg.burst {
		return
	}
	b.tokens.Add(b.cfg.earn)
}

// withdraw takes the price of one retry, or reports that the budget is spent.
func (b *retryBudget) withdraw() bool {
	for {
		t := b.tokens.Load()
		if t < retryCost {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-retryCost) {
			return true
		}
	}
}

// failure says how an attempt to reach a replica failed.
type failure uint8

const (
	failNone failure = iota
	// failConnect: the connection could not be made; nothing was sent.
	failConnect
	// failRefused: the replica's address refused the connection, or is
	// unreachable: nothing listens there any more (the process died).
	// Nothing was sent.
	failRefused
	// failNotSent: a pooled connection broke before a byte was written.
	failNotSent
	// failBroken: the connection broke after the request (or part of it)
	// was written and before a byte of the answer arrived.
	failBroken
	// failTimeout: the replica did not answer in time.
	failTimeout
	// failProtocol: the replica's answer could not be parsed.
	failProtocol
	// failBody: reading the client's request body failed.
	failBody
)

// replicaFault reports whether f counts against the replica for outlier
// ejection: it failed to connect, reset or cut the connection, answered
// garbage or too late. A pooled connection found closed before anything
// was sent (a keep-alive race) and a client's failing body do not count.
func (f failure) replicaFault() bool {
	switch f {
	case failConnect, failRefused, failBroken, failTimeout, failProtocol:
		return true
	}
	return false
}

// attemptFacts is what decides whether a failed attempt may be retried.
type attemptFacts struct {
	failure failure
	// idempotent: RFC 9110 §9.2.2's GET HEAD OPTIONS TRACE PUT DELETE, or
	// a request with an Idempotency-Key.
	idempotent bool
	// replayable: the request body can be sent again (none, buffered, or
	// not a byte of the stream consumed).
	replayable bool
}

// retryable is the retry policy: retry what the replica cannot have acted
// on (nothing was sent), and an idempotent request whose connection broke
// before a byte of the answer came — a replica that died with it, or a
// keep-alive connection it closed as we sent — since sending it again is
// safe by its method or its client's word. A timeout is not retried: the
// replica may still be working on it, and a retry would double the load
// of a slow revision.
func retryable(f attemptFacts) bool {
	if !f.replayable {
		return false
	}
	switch f.failure {
	case failConnect, failRefused, failNotSent:
		return true
	case failBroken:
		return f.idempotent
	}
	return false
}

func isIdempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}
