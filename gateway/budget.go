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

// attemptFacts is what decides whether a failed attempt may be retried.
type attemptFacts struct {
	failure    failure
	idempotent bool // RFC 9110 §9.2.2: GET HEAD OPTIONS TRACE PUT DELETE
	// replayable: the request body can be sent again (none, buffered, or
	// not a byte of the stream consumed).
	replayable bool
	// reused: the connection came from the pool (a keep-alive the replica
	// may have closed just as we sent, as net/http's Transport assumes).
	reused bool
	// terminating: the replica is leaving (Terminating, deleted, node dead).
	terminating bool
}

// retryable is the retry policy: retry only what the replica cannot have
// acted on, or what is idempotent and hit a replica that is going away or
// a keep-alive connection that it closed.
func retryable(f attemptFacts) bool {
	if !f.replayable {
		return false
	}
	switch f.failure {
	case failConnect, failNotSent:
		return true
	case failBroken:
		return f.idempotent && (f.terminating || f.reused)
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
