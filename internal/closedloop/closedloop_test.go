package closedloop

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counter is a request function that counts its calls, fails every
// failEvery-th one (never when 0), and closes reached[n] at call n.
type counter struct {
	calls     atomic.Int64
	failEvery int64
	mu        sync.Mutex
	reached   map[int64]chan struct{}
}

func newCounter(failEvery int64, marks ...int64) *counter {
	c := &counter{failEvery: failEvery, reached: map[int64]chan struct{}{}}
	for _, m := range marks {
		c.reached[m] = make(chan struct{})
	}
	return c
}

func (c *counter) do() error {
	n := c.calls.Add(1)
	c.mu.Lock()
	if ch, ok := c.reached[n]; ok {
		close(ch)
	}
	c.mu.Unlock()
	if c.failEvery > 0 && n%c.failEvery == 0 {
		return errors.New("every third fails")
	}
	return nil
}

func TestLoadCountsAndStops(t *testing.T) {
	c := newCounter(3, 30, 300)
	l := Start(context.Background(), 1, c.do)
	<-c.reached[30]
	l.Add(4)
	<-c.reached[300]
	r := l.Stop()
	after := c.calls.Load()
	if r.OK+r.Failed != after {
		t.Errorf("OK %d + Failed %d = %d, want every call (%d) counted once Stop returned", r.OK, r.Failed, r.OK+r.Failed, after)
	}
	if r.Failed == 0 || r.FirstErr != "every third fails" {
		t.Errorf("Failed %d, FirstErr %q: want failures and the first one's text", r.Failed, r.FirstErr)
	}
	if c.calls.Load() != after {
		t.Errorf("calls went on after Stop returned")
	}
}

func TestLoadEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := newCounter(0, 10)
	l := Start(ctx, 3, c.do)
	<-c.reached[10]
	cancel()
	ended := make(chan struct{})
	go func() { l.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("clients still running 10s after their context ended")
	}
	r := l.Stop()
	if r.Failed != 0 || r.FirstErr != "" || r.OK < 10 {
		t.Errorf("Stop() = %+v, want 10 or more successes only", r)
	}
}
