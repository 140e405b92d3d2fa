// Package backoff is Surge's one way to wait between attempts: an
// exponential back-off with jitter, and Retry, which runs an operation
// until it succeeds, fails for good, or its context ends.
//
// Jitter spreads the waits of many clients that failed together (every
// agent when the API restarts) so that they do not come back together:
// AWS's "Exponential Backoff And Jitter" calls the scheme used here "equal
// jitter", which keeps at least half of each wait.
package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// Policy is an exponential back-off: the n-th wait is Base × 2^(n-1), at
// most Max, less a random part of up to Jitter of itself.
type Policy struct {
	// Base is the first wait.
	Base time.Duration
	// Max caps every wait.
	Max time.Duration
	// Jitter is the share of each wait drawn at random, 0 to 1: 0 waits
	// exactly, 0.5 waits between half and all of it.
	Jitter float64
}

// Delay is the wait before attempt n+1 after n failures (n ≥ 1); n below 1
// counts as 1.
func (p Policy) Delay(n int) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	if p.Jitter > 0 && d > 0 {
		d -= time.Duration(rand.Float64() * min(p.Jitter, 1) * float64(d))
	}
	return d
}

// permanent marks an error that retrying cannot mend.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Retry returns it at once instead of trying
// again. Retry returns err itself, not the wrapper.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

// Retry calls op until it returns nil or a Permanent error, waiting
// p.Delay(n) on c after the n-th failure. It returns op's last error when
// ctx ends first (or ctx's error if op never ran).
func Retry(ctx context.Context, c clock.Clock, p Policy, op func(context.Context) error) error {
	err := ctx.Err()
	for n := 1; ctx.Err() == nil; n++ {
		if err = op(ctx); err == nil {
			return nil
		}
		if pe := (*permanent)(nil); errors.As(err, &pe) {
			return pe.err
		}
		if !clock.Sleep(ctx, c, p.Delay(n)) {
			break
		}
	}
	return err
}
