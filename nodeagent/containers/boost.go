package containers

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// boostDeadlines ends the start-up CPU boosts that nobody else ends: a
// replica's task starts without its CPU quota (Config.StartupCPUBoost),
// the agent ends the boost at Ready (ApplyCPULimit), and a timer armed as
// the task starts ends it after Config.StartupCPUBoostMax if the replica
// is not Ready by then. Without the deadline a replica that never answers
// its probe runs unthrottled for as long as the agent waits on it.
//
// Its methods are safe for concurrent use and do not block, but close,
// which waits for the ends under way.
type boostDeadlines struct {
	clock clock.Clock
	after time.Duration
	// end ends id's boost; it is called from a timer's goroutine, never
	// with mu held, and may block on containerd. It returns whether the
	// boost is over: false arms the deadline again, so that an end that
	// failed is tried again a deadline later.
	end func(id string) bool

	mu      sync.Mutex
	closed  bool
	gen     uint64                // of the latest arm
	timers  map[string]boostTimer // by replica id
	running sync.WaitGroup        // ends under way
}

// boostTimer is one replica's deadline; gen tells a timer that fired from
// the one that replaced it.
type boostTimer struct {
	timer clock.Timer
	gen   uint64
}

func newBoostDeadlines(c clock.Clock, after time.Duration, end func(id string) bool) *boostDeadlines {
	return &boostDeadlines{clock: c, after: after, end: end, timers: map[string]boostTimer{}}
}

// arm starts id's deadline, replacing the one it had: its task has just
// started, boosted.
func (b *boostDeadlines) arm(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if old, ok := b.timers[id]; ok {
		old.timer.Stop()
	}
	b.gen++
	gen := b.gen
	b.timers[id] = boostTimer{gen: gen, timer: b.clock.AfterFunc(b.after, func() { b.fire(id, gen) })}
}

// disarm drops id's deadline: its boost is over, or it is gone.
func (b *boostDeadlines) disarm(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.timers[id]; ok {
		t.timer.Stop()
		delete(b.timers, id)
	}
}

// armed reports whether id has a deadline to come.
func (b *boostDeadlines) armed(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.timers[id]
	return ok
}

func (b *boostDeadlines) fire(id string, gen uint64) {
	b.mu.Lock()
	if t, ok := b.timers[id]; b.closed || !ok || t.gen != gen {
		b.mu.Unlock() // disarmed or re-armed since: not this timer's turn
		return
	}
	delete(b.timers, id)
	b.running.Add(1) // under mu, before close sets closed: never beside its Wait
	b.mu.Unlock()
	defer b.running.Done()
	if !b.end(id) {
		b.arm(id)
	}
}

// close stops every deadline and waits for the ends under way.
func (b *boostDeadlines) close() {
	b.mu.Lock()
	b.closed = true
	for id, t := range b.timers {
		t.timer.Stop()
		delete(b.timers, id)
	}
	b.mu.Unlock()
	b.running.Wait()
}

// armBoost starts replica id's boost deadline when its task started
// boosted: the boost is on and the replica has a CPU limit (labels, as
// set at creation).
func (r *Runtime) armBoost(id string, labels map[string]string) {
	if milli, _ := strconv.ParseInt(labels[LabelCPU], 10, 64); r.cfg.StartupCPUBoost && milli > 0 {
		r.boosts.arm(id)
	}
}

// endBoost is the boost deadline's end: replica id was not Ready
// StartupCPUBoostMax after its task started, and runs under its CPU quota
// from now on. A replica gone meanwhile has nothing to end.
func (r *Runtime) endBoost(id string) bool {
	// A bound on real I/O (containerd): wall time, whatever the clock.
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	err := r.ApplyCPULimit(ctx, id)
	switch {
	case err == nil:
		r.cfg.Log.Info("replica not ready at the end of its start-up CPU boost; it runs under its CPU quota from now on",
			"replica", id, "boost", r.cfg.StartupCPUBoostMax)
		return true
	case errors.Is(err, ErrNotFound), r.ctx.Err() != nil:
		return true
	default:
		r.cfg.Log.Warn("end start-up CPU boost", "replica", id, "err", err)
		return false
	}
}
