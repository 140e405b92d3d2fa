package gateway

import (
	"sync"
	"sync/atomic"
)

// waitQueue holds the requests of one revision that found no replica with
// room. It is the slow path: the fast path only reads n. Woken requests
// pick again and, if they lose the race for the freed slot, queue again at
// the back; FIFO is therefore approximate, in exchange for never holding a
// lock while a request is proxied.
type waitQueue struct {
	n   atomic.Int64 // queued requests
	max int

	mu sync.Mutex
	ws []*waiter
	// onChange reports the new length under mu (a queue-depth gauge); may be nil.
	onChange func(n int)
}

type waiter struct {
	ch chan struct{} // buffered 1; a wake is sent under the queue's lock
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

func acquireWaiter() *waiter { return waiterPool.Get().(*waiter) }

func releaseWaiter(w *waiter) {
	select {
	case <-w.ch:
	default:
	}
	waiterPool.Put(w)
}

func (q *waitQueue) waiting() bool { return q.n.Load() > 0 }

func (q *waitQueue) len() int64 { return q.n.Load() }

// push appends w, or reports false when the queue is full.
func (q *waitQueue) push(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ws) >= q.max {
		return false
	}
	q.ws = append(q.ws, w)
	q.changed()
	return true
}

// remove takes w out of the queue and reports whether it was still there.
// When it was not, a wake was already sent to w: the caller that does not
// need it must pass it on with wakeOne.
func (q *waitQueue) remove(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.ws {
		if x == w {
			copy(q.ws[i:], q.ws[i+1:])
			q.ws[len(q.ws)-1] = nil
			q.ws = q.ws[:len(q.ws)-1]
			q.changed()
			return true
		}
	}
	return false
}

// wakeOne wakes the longest-waiting request, if any.
func (q *waitQueue) wakeOne() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ws) == 0 {
		return
	}
	w := q.ws[0]
	copy(q.ws, q.ws[1:])
	q.ws[len(q.ws)-1] = nil
	q.ws = q.ws[:len(q.ws)-1]
	q.changed()
	w.ch <- struct{}{}
}

// wakeAll wakes every queued request: replicas appeared, or the revision
// went away.
func (q *waitQueue) wakeAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, w := range q.ws {
		w.ch <- struct{}{}
		q.ws[i] = nil
	}
	q.ws = q.ws[:0]
	q.changed()
}

func (q *waitQueue) changed() {
	q.n.Store(int64(len(q.ws)))
	if q.onChange != nil {
		q.onChange(len(q.ws))
	}
}
