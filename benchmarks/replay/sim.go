package main

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/surgeplatform/surge/autoscaler"
)

// epoch is the wall time the replay's simulated clock starts at: minute 480
// of the trace's day, 08:00. Only differences of it matter.
var epoch = time.Date(2019, 7, 15, 8, 0, 0, 0, time.UTC)

// minDuration is the shortest busy time: the trace rounds to milliseconds,
// and a request still occupies a replica for a moment.
const minDuration = time.Millisecond

// arrivals draws a function's invocations: each minute's count spread as a
// Poisson process inside the minute (uniform times, given the count), each
// busy for a duration drawn from the function's percentiles. The stream
// depends only on seed and the function, so every policy replays the same
// requests.
func arrivals(f *Function, seed uint64) (at, dur []time.Duration) {
	rng := rand.New(rand.NewPCG(seed, f.Hash()))
	total := 0
	for _, c := range f.Counts {
		total += c
	}
	at = make([]time.Duration, 0, total)
	dur = make([]time.Duration, 0, total)
	for m, c := range f.Counts {
		start := time.Duration(m) * time.Minute
		first := len(at)
		for range c {
			at = append(at, start+time.Duration(rng.Int64N(int64(time.Minute))))
		}
		slices.Sort(at[first:])
		for range c {
			dur = append(dur, max(minDuration, f.Durations.Sample(rng.Float64())))
		}
	}
	return at, dur
}

// fnResult is one function's outcome under one policy.
type fnResult struct {
	invocations int64
	coldStarts  int64
	coldZero    int64 // cold starts that found no replica, not even a starting one
	replicaNs   int64
	busyNs      int64
	peaks       []int32 // most replicas alive within each second
}

// driver decides a function's replicas in the simulation. Its methods are
// called from the goroutine that simulates the function, never at once,
// and must not block.
type driver interface {
	// tick is called at every whole second with the sample of the second
	// that ended and the ready replicas; it returns the desired replicas,
	// or -1 to leave them alone.
	tick(now time.Duration, s autoscaler.Sample, ready int) int
	// keepAlive is how long an idle replica lives after its last use, or 0
	// for as long as the driver wants it.
	keepAlive() time.Duration
}

var (
	_ driver = coreDriver{}
	_ driver = fixedDriver{}
)

// coreDriver drives replicas with the real decision core, as the live
// runner will: every second, Record the gateway's sample, then Scale.
type coreDriver struct{ d *autoscaler.Decider }

func (c coreDriver) tick(now time.Duration, s autoscaler.Sample, ready int) int {
	t := epoch.Add(now)
	c.d.Record(t, s)
	return c.d.Scale(t, ready).Desired
}

func (coreDriver) keepAlive() time.Duration { return 0 }

// fixedDriver is Lambda's policy: every replica is kept for a fixed time
// after its last use, and new ones start only for requests that find none
// free. It is a per-replica rule, so it does not use the decision core.
type fixedDriver struct{ keep time.Duration }

func (fixedDriver) tick(time.Duration, autoscaler.Sample, int) int { return -1 }
func (f fixedDriver) keepAlive() time.Duration                     { return f.keep }

// durHeap is a min-heap of completion times.
type durHeap []time.Duration

func (h durHeap) Len() int           { return len(h) }
func (h durHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h durHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *durHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *durHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// deque is a double-ended queue of times, amortised O(1) at both ends.
type deque struct {
	q    []time.Duration
	head int
}

func (d *deque) len() int             { return len(d.q) - d.head }
func (d *deque) push(v time.Duration) { d.q = append(d.q, v) }
func (d *deque) front() time.Duration { return d.q[d.head] }

func (d *deque) popBack() time.Duration {
	v := d.q[len(d.q)-1]
	d.q = d.q[:len(d.q)-1]
	d.compact()
	return v
}

func (d *deque) popFront() time.Duration {
	v := d.q[d.head]
	d.head++
	d.compact()
	return v
}

func (d *deque) compact() {
	if d.head == len(d.q) {
		d.q, d.head = d.q[:0], 0
	} else if d.head > 1024 && d.head*2 > len(d.q) {
		n := copy(d.q, d.q[d.head:])
		d.q, d.head = d.q[:n], 0
	}
}

// simulate replays one function's requests through a gateway with
// per-replica concurrency 1 and replicas decided by drv, for the trace's
// length end.
//
// The gateway model: a request takes a free ready replica if there is one
// (the most recently used, so that the others can expire); otherwise it is
// a cold start: it waits in a FIFO queue and, unless a replica already
// starting will take it, the gateway starts one at once, as Surge's gateway
// does from zero. A starting replica is ready coldStart later. At every
// whole second the driver gets the second's sample and sets the replica
// count: new replicas start; surplus ones go, starting ones not needed by
// the queue first, then idle ones, least recently used first; busy replicas
// are never stopped.
func simulate(at, dur []time.Duration, drv driver, coldStart, end time.Duration) fnResult {
	seconds := int(end / time.Second)
	res := fnResult{peaks: make([]int32, seconds)}
	var (
		now      time.Duration
		idle     deque // last-use times of idle ready replicas, oldest first
		starting deque // ready times of starting replicas, earliest first
		queue    deque // busy times of queued requests, first come first
		done     durHeap
		busy     int

		secBusy, secQueue time.Duration // integrals over the current second
		secRequests       int
		secPeak           int
	)
	keep := drv.keepAlive()
	replicas := func() int { return idle.len() + busy + starting.len() }
	advance := func(t time.Duration) {
		dt := t - now
		if dt <= 0 {
			return
		}
		r := replicas()
		res.replicaNs += int64(r) * int64(dt)
		res.busyNs += int64(busy) * int64(dt)
		secBusy += time.Duration(busy) * dt
		secQueue += time.Duration(queue.len()) * dt
		now = t
	}
	touched := func() { secPeak = max(secPeak, replicas()) }
	serve := func(d time.Duration) {
		busy++
		heap.Push(&done, now+d)
	}
	free := func() { // a replica became free at now
		if queue.len() > 0 {
			serve(queue.popFront())
			return
		}
		idle.push(now)
	}

	const never = time.Duration(1<<63 - 1)
	next := 0
	nextTick := time.Second
	for {
		tArr, tDone, tReady, tExp := never, never, never, never
		if next < len(at) {
			tArr = at[next]
		}
		if len(done) > 0 {
			tDone = done[0]
		}
		if starting.len() > 0 {
			tReady = starting.front()
		}
		if keep > 0 && idle.len() > 0 {
			tExp = idle.front() + keep
		}
		t := min(tArr, tDone, tReady, tExp, nextTick)
		if t > end {
			advance(end)
			break
		}
		advance(t)
		// Ties: completions, then readiness, then expiry, then the tick,
		// then arrivals, so a tick's sample holds exactly its second.
		switch t {
		case tDone:
			heap.Pop(&done)
			busy--
			free()
		case tReady:
			starting.popFront()
			free()
		case tExp:
			idle.popFront()
		case nextTick:
			sec := int(t/time.Second) - 1
			res.peaks[sec] = int32(secPeak)
			s := autoscaler.Sample{
				Concurrency: secBusy.Seconds(),
				Queued:      secQueue.Seconds(),
				Requests:    float64(secRequests),
			}
			secBusy, secQueue, secRequests = 0, 0, 0
			if want := drv.tick(t, s, idle.len()+busy); want >= 0 {
				for replicas() < want {
					starting.push(now + coldStart)
				}
				for replicas() > want && starting.len() > queue.len() {
					starting.popBack()
				}
				for replicas() > want && idle.len() > 0 {
					idle.popFront()
				}
			}
			secPeak = replicas()
			nextTick += time.Second
		default: // arrival
			d := dur[next]
			next++
			res.invocations++
			secRequests++
			if idle.len() > 0 {
				idle.popBack()
				serve(d)
			} else {
				res.coldStarts++
				if replicas() == 0 {
					res.coldZero++
				}
				queue.push(d)
				if starting.len() < queue.len() {
					starting.push(now + coldStart)
				}
			}
		}
		touched()
	}
	return res
}
