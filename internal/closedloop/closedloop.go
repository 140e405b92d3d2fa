// Package closedloop runs clients that each send their next request as soon
// as the last is answered: the load that the autoscaling e2e test and
// benchmark B4 step up from one client to many.
package closedloop

import (
	"context"
	"sync"
	"sync/atomic"
)

// Load is a set of closed-loop clients sharing one request function. Make
// one with Start; Add more clients while it runs; Stop ends them all.
type Load struct {
	ctx  context.Context
	do   func() error
	stop chan struct{}
	wg   sync.WaitGroup

	ok, failed atomic.Int64
	firstErr   atomic.Pointer[string]
}

// Result is what a Load's clients did.
type Result struct {
	// OK and Failed count the requests that do answered nil and an error.
	OK, Failed int64
	// FirstErr is the first error's text; empty when none failed.
	FirstErr string
}

// Start starts clients clients, each calling do in a loop until Stop is
// called or ctx ends. do must be safe for concurrent use.
func Start(ctx context.Context, clients int, do func() error) *Load {
	l := &Load{ctx: ctx, do: do, stop: make(chan struct{})}
	l.Add(clients)
	return l
}

// Add starts n more clients.
func (l *Load) Add(n int) {
	for range n {
		l.wg.Add(1)
		go l.client()
	}
}

func (l *Load) client() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		case <-l.ctx.Done():
			return
		default:
		}
		if err := l.do(); err != nil {
			l.failed.Add(1)
			msg := err.Error()
			l.firstErr.CompareAndSwap(nil, &msg)
		} else {
			l.ok.Add(1)
		}
	}
}

// Stop ends every client, waits for their requests in flight, and returns
// what they did. Call it once.
func (l *Load) Stop() Result {
	close(l.stop)
	l.wg.Wait()
	r := Result{OK: l.ok.Load(), Failed: l.failed.Load()}
	if p := l.firstErr.Load(); p != nil {
		r.FirstErr = *p
	}
	return r
}
