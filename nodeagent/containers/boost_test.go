package containers

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// ended records the boosts a boostDeadlines ended.
type ended struct {
	mu   sync.Mutex
	ids  []string
	fail map[string]int // ends of an id that fail, before one succeeds
	at   chan string
}

func (e *ended) end(id string) bool {
	e.mu.Lock()
	defer func() { e.mu.Unlock(); e.at <- id }()
	if e.fail[id] > 0 {
		e.fail[id]--
		return false
	}
	e.ids = append(e.ids, id)
	return true
}

func (e *ended) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ids)
}

func TestBoostDeadlines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake := clock.NewFake()
	const after = 10 * time.Second
	e := &ended{fail: map[string]int{"flaky": 1}, at: make(chan string, 10)}
	b := newBoostDeadlines(fake, after, e.end)
	defer b.close()
	waitEnd := func(want string) {
		t.Helper()
		select {
		case id := <-e.at:
			if id != want {
				t.Fatalf("ended %s, want %s", id, want)
			}
		case <-ctx.Done():
			t.Fatalf("no end of %s", want)
		}
	}

	b.arm("slow")  // never Ready
	b.arm("ready") // Ready in time: the agent's ApplyCPULimit disarms it
	b.arm("flaky") // its first end fails
	if err := fake.BlockUntilContext(ctx, 3); err != nil {
		t.Fatal(err)
	}
	b.disarm("ready")
	fake.Advance(after / 2)
	b.arm("restarted") // a task that started later has its own deadline
	fake.Advance(after/2 - time.Nanosecond)
	if got := e.got(); len(got) != 0 {
		t.Fatalf("boosts ended before their deadline: %v", got)
	}
	fake.Advance(time.Nanosecond)
	for range 2 {
		<-e.at
	}
	if got := e.got(); !slices.Equal(got, []string{"slow"}) {
		t.Fatalf("ended %v at the deadline, want [slow] (flaky failed)", got)
	}
	if err := fake.BlockUntilContext(ctx, 2); err != nil { // restarted's, flaky's again
		t.Fatal(err)
	}
	if !b.armed("flaky") || b.armed("slow") || b.armed("ready") {
		t.Fatalf("armed after the deadline: flaky %v slow %v ready %v, want only flaky, again",
			b.armed("flaky"), b.armed("slow"), b.armed("ready"))
	}
	fake.Advance(after / 2)
	waitEnd("restarted")
	fake.Advance(after / 2)
	waitEnd("flaky")
	if got := e.got(); !slices.Equal(got, []string{"slow", "restarted", "flaky"}) {
		t.Fatalf("ended %v", got)
	}
}

// TestBoostDeadlinesRearmAndClose: a restart replaces the deadline (the
// old timer ends nothing), and close stops every deadline to come.
func TestBoostDeadlinesRearmAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake := clock.NewFake()
	e := &ended{at: make(chan string, 10)}
	b := newBoostDeadlines(fake, time.Second, e.end)
	b.arm("a")
	fake.Advance(time.Second / 2)
	b.arm("a")
	fake.Advance(time.Second / 2)
	if got := e.got(); len(got) != 0 {
		t.Fatalf("the replaced deadline ended %v", got)
	}
	fake.Advance(time.Second / 2)
	select {
	case <-e.at:
	case <-ctx.Done():
		t.Fatal("the new deadline ended nothing")
	}
	for i := range 3 {
		b.arm(strconv.Itoa(i))
	}
	b.close()
	b.arm("after-close")
	fake.Advance(time.Hour)
	if got := e.got(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("ended %v, want [a]: close stops the rest", got)
	}
	if b.armed("after-close") {
		t.Fatal("armed after close")
	}
}

// TestStartupBoostEndsAtItsDeadline is the attack of a replica that never
// becomes Ready, through containerd and runc: nobody calls ApplyCPULimit,
// and its cgroup must still get its CPU quota once StartupCPUBoostMax has
// passed on the runtime's clock; so must its task after a restart.
func TestStartupBoostEndsAtItsDeadline(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	fake := clock.NewFake()
	r := e.newRuntime(t, func(c *Config) {
		c.Clock = fake
		c.Network.Clock = clock.Real() // the warm pool's timing is not under test
	})
	boost := r.cfg.StartupCPUBoostMax
	spec := Spec{ID: "boost-1", Image: e.imageRef, MilliCPU: 250, MemoryBytes: 64 << 20}
	c := startReplica(t, ctx, r, spec)

	quota := func(pid uint32) string {
		return cgroupValue(t, pid, "cpu", "cpu.cfs_quota_us", "cpu.max")
	}
	limited := func(q string) bool { return q == "25000" || q == "25000 100000" }
	// waitLimited polls the cgroup, for at most the test's context: the
	// deadline's end runs in a goroutine of its own.
	waitLimited := func(pid uint32) {
		t.Helper()
		for q := quota(pid); !limited(q); q = quota(pid) {
			select {
			case <-ctx.Done():
				t.Fatalf("cpu quota %s after the start-up boost's deadline, want 25000 of 100000", q)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for _, step := range []string{"start", "restart"} {
		if q := quota(c.PID); limited(q) {
			t.Fatalf("%s: cpu quota %s at once, want none during the start-up boost", step, q)
		}
		// The deadline is the one waiter on the runtime's clock.
		if err := fake.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("%s: no deadline on the clock for the start-up boost: %v", step, err)
		}
		fake.Advance(boost - time.Nanosecond)
		if q := quota(c.PID); limited(q) {
			t.Fatalf("%s: cpu quota %s before the deadline, want none", step, q)
		}
		fake.Advance(time.Nanosecond)
		waitLimited(c.PID)
		if step == "start" {
			var err error
			if c, err = r.Restart(ctx, spec.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
}
