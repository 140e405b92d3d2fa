// Package clock is the one source of time for Surge's code that waits or
// decides: the current time, timers, tickers, AfterFunc, and a sleep or a
// deadline that a context cuts short. Code takes a Clock (Real in
// production); tests pass a *Fake and move it by hand, so a test of a
// 30-second back-off runs in microseconds and never flakes.
//
// A test advances a Fake only once the code under test waits on it:
// BlockUntilContext(ctx, n) returns when n timers, tickers or sleeps are
// pending. Advancing before that races with the code arming its timer.
//
// The clocks are github.com/jonboulle/clockwork's (the one etcd uses),
// under Surge's names; this package adds what takes a context. Pure
// decision code does not take a Clock at all: it takes now as an argument.
// memberlist and etcd keep their own timers.
package clock

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
)

// Clock tells the time and makes timers. Its methods are safe for
// concurrent use; Now does not allocate.
type Clock = clockwork.Clock

// Timer fires once; Chan delivers the time it fired.
type Timer = clockwork.Timer

// Ticker fires every period until stopped.
type Ticker = clockwork.Ticker

// Fake is a Clock that only moves when told to (Advance). Timers fire, and
// AfterFunc functions start in their own goroutines, inside Advance.
type Fake = clockwork.FakeClock

// Real returns the wall clock.
func Real() Clock { return real }

var real = clockwork.NewRealClock()

// Epoch is where NewFake starts: a fixed instant, so that tests print the
// same times on every run.
var Epoch = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// NewFake returns a Fake reading Epoch.
func NewFake() *Fake { return clockwork.NewFakeClockAt(Epoch) }

// Or returns c, or the wall clock when c is nil: the default of the Clock
// field of every config.
func Or(c Clock) Clock {
	if c == nil {
		return real
	}
	return c
}

// Sleep waits d on c, or until ctx ends, and reports whether d passed
// (false when ctx ended first). A d of zero or less does not wait.
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}

// WithTimeout is context.WithTimeout on c: on a Fake, the context ends
// with context.DeadlineExceeded once the Fake has been advanced by d.
func WithTimeout(ctx context.Context, c Clock, d time.Duration) (context.Context, context.CancelFunc) {
	if _, fake := c.(*Fake); !fake {
		return context.WithTimeout(ctx, d)
	}
	inner, cancel := context.WithCancelCause(ctx)
	t := c.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return &fakeDeadline{Context: inner, deadline: c.Now().Add(d)}, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// fakeDeadline is a context whose deadline is on a Fake clock. (clockwork
// has one too, but its Err blocks until the context ends.)
type fakeDeadline struct {
	context.Context
	deadline time.Time
}

func (c *fakeDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *fakeDeadline) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}
