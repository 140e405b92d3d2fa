package gateway

import (
	"sync"
	"sync/atomic"
)

// waitQueue holds the requests of one revision that found no replica with
// room. It is the slow path: the fast path only reads n. It is an
// intrusive doubly linked list, so that a burst of thousands of waiters
// costs O(1) per push, wake and removal, and nothing is allocated. A woken
// request picks again and, if it loses the race for the freed slot, goes
// back to the front (requeue), so a burst is served in about the order it
// came, without holding a lock while a request is proxied.
type waitQueue struct {
	n   atomic.Int64 // queued requests
	max int          // the revision's bound
	// room bounds the waiting requests of every revision of the gateway
	// together; nil means no bound beyond max.
	room *queueRoom

	mu   sync.Mutex
	head waiter // sentinel: head.next is the oldest waiter, head.prev the newest
	len  int
	// onChange reports the new length under mu (a queue-depth gauge); may be nil.
	onChange func(n int)
}

// queueRoom counts the requests waiting in all of a gateway's queues.
type queueRoom struct {
	n   atomic.Int64
	max int64
}

// take reserves room for one more waiter, or reports that there is none.
func (r *queueRoom) take() bool {
	if r == nil {
		return true
	}
	if r.n.Add(1) > r.max {
		r.n.Add(-1)
		return false
	}
	return true
}

func (r *queueRoom) give() {
	if r != nil {
		r.n.Add(-1)
	}
}

// waiter is one queued request. Its links belong to the queue's lock.
type waiter struct {
	ch         chan struct{} // buffered 1; a wake is sent under the queue's lock
	prev, next *waiter
	queued     bool
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

// pushResult says whether push queued a request, or why not.
type pushResult uint8

const (
	pushed pushResult = iota
	revisionFull
	gatewayFull
)

func (q *waitQueue) waiting() bool { return q.n.Load() > 0 }

func (q *waitQueue) length() int64 { return q.n.Load() }

// push appends w at the back, or reports which bound is reached.
func (q *waitQueue) push(w *waiter) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.len >= q.max {
		return revisionFull
	}
	if !q.room.take() {
		return gatewayFull
	}
	q.link(w, q.last())
	return pushed
}

// requeue puts w back at the front: it was woken for a slot that another
// request took first, so it is still the oldest. It is not refused for
// want of room: the room it had was only lent back while it picked.
func (q *waitQueue) requeue(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.room.take() // may overshoot the bound by the requests picking right now
	q.link(w, q.sentinel())
}

// remove takes w out of the queue and reports whether it was still there.
// When it was not, a wake was already sent to w: the caller that does not
// need it must pass it on with wakeOne.
func (q *waitQueue) remove(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
	q.unlink(w)
	return true
}

// wakeOne wakes the longest-waiting request, if any.
func (q *waitQueue) wakeOne() { q.wake(1) }

// wakeAll wakes every queued request: the revision went away, or replicas
// with no concurrency limit appeared.
func (q *waitQueue) wakeAll() { q.wake(-1) }

// wake wakes the n longest-waiting requests (every one for n < 0).
func (q *waitQueue) wake(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ; n != 0 && q.len > 0; n-- {
		w := q.sentinel().next
		q.unlink(w)
		w.ch <- struct{}{}
	}
}

func (q *waitQueue) sentinel() *waiter {
	if q.head.next == nil {
		q.head.next, q.head.prev = &q.head, &q.head
	}
	return &q.head
}

func (q *waitQueue) last() *waiter { return q.sentinel().prev }

// link inserts w after at. Called with mu held.
func (q *waitQueue) link(w, at *waiter) {
	w.prev, w.next = at, at.next
	at.next.prev = w
	at.next = w
	w.queued = true
	q.len++
	q.changed()
}

// unlink takes w out. Called with mu held, w queued.
func (q *waitQueue) unlink(w *waiter) {
	w.prev.next, w.next.prev = w.next, w.prev
	w.prev, w.next, w.queued = nil, nil, false
	q.len--
	q.room.give()
	q.changed()
}

func (q *waitQueue) changed() {
	q.n.Store(int64(q.len))
	if q.onChange != nil {
		q.onChange(q.len)
	}
}
