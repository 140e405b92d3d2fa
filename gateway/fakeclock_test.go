package gateway

import (
	"sync"
	"time"
)

// fakeClock is a Clock that moves only when told. It lives in a test file
// rather than a gatewaytest package because its Timer and Ticker types are
// gateway's, and the gateway's own tests use it (an import cycle otherwise).
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeTimer
}

type fakeTimer struct {
	c      chan time.Time
	at     time.Time
	period time.Duration // 0 for a one-shot timer
	done   bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d, period time.Duration) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: c.now.Add(d), period: period}
	c.waiters = append(c.waiters, t)
	return t
}

func (c *fakeClock) NewTimer(d time.Duration) Timer   { return fakeTimerH{c, c.add(d, 0)} }
func (c *fakeClock) NewTicker(d time.Duration) Ticker { return fakeTickerH{c, c.add(d, d)} }

// Advance moves time and fires what is due (a ticker at most once per call
// per period crossed, dropping ticks its reader has not taken, as time.Ticker does).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.waiters {
		for !t.done && !t.at.After(c.now) {
			select {
			case t.c <- t.at:
			default:
			}
			if t.period == 0 {
				t.done = true
			} else {
				t.at = t.at.Add(t.period)
			}
		}
	}
}

// timers reports how many timers and tickers are live.
func (c *fakeClock) timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.waiters {
		if !t.done {
			n++
		}
	}
	return n
}

type fakeTimerH struct {
	c *fakeClock
	t *fakeTimer
}

func (h fakeTimerH) C() <-chan time.Time { return h.t.c }
func (h fakeTimerH) Stop() bool {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	was := !h.t.done
	h.t.done = true
	return was
}

type fakeTickerH struct {
	c *fakeClock
	t *fakeTimer
}

func (h fakeTickerH) C() <-chan time.Time { return h.t.c }
func (h fakeTickerH) Stop() {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.t.done = true
}
