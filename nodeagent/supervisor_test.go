package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/clock"
)

// fakeReplicas is replicaAPI in memory: one revision, and the statuses
// written, in order.
type fakeReplicas struct {
	rev *api.Revision

	mu     sync.Mutex
	writes []statusWrite
}

// statusWrite is what a test compares of a status write.
type statusWrite struct {
	Phase    api.ReplicaPhase
	Message  string
	Restarts int32
}

func (f *fakeReplicas) revision(_ context.Context, key api.Key) (*api.Revision, error) {
	if f.rev == nil || key.Name != f.rev.Metadata.Name {
		return nil, api.ErrNotFound
	}
	return f.rev, nil
}

func (f *fakeReplicas) putStatus(_ context.Context, r *api.Replica) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, statusWrite{r.Status.Phase, r.Status.Message, r.Status.Restarts})
	return nil
}

func (f *fakeReplicas) written() []statusWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]statusWrite(nil), f.writes...)
}

// fakeAnnouncer records what the data path was told.
type fakeAnnouncer struct {
	mu     sync.Mutex
	events []string
}

func (f *fakeAnnouncer) EndpointReady(*api.Replica) { f.add("ready") }
func (f *fakeAnnouncer) EndpointGone(*api.Replica)  { f.add("gone") }
func (f *fakeAnnouncer) add(e string) {
	f.mu.Lock()
	f.events = append(f.events, e)
	f.mu.Unlock()
}

func (f *fakeAnnouncer) told() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// supervised is one replica's supervisor under test, on a fake clock, a
// fake runtime and an in-memory API.
type supervised struct {
	agent    *Agent
	clock    *clock.Fake
	runtime  *fakeRuntime
	replicas *fakeReplicas
	announce *fakeAnnouncer
	replica  *api.Replica
	stop     func()
}

func newSupervised(t *testing.T, configure func(*Config)) *supervised {
	t.Helper()
	fake := clock.NewFake()
	cfg := DefaultConfig()
	cfg.NodeName = "node-1"
	cfg.MilliCPU, cfg.MemoryBytes = 2000, 4<<30
	cfg.Clock = fake
	if configure != nil {
		configure(&cfg)
	}
	an := &fakeAnnouncer{}
	a, err := New(cfg, nil, nil, an, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rt := newFakeRuntime(t)
	rev := &api.Revision{Metadata: api.ObjectMeta{Name: "hello-00001", Namespace: "default"}}
	rev.Spec.Template.Image = "example.test/hello:v1"
	rev.Spec.Template.Resources = api.Resources{CPU: "100m", Memory: "128Mi"}
	reps := &fakeReplicas{rev: rev}
	a.runtime, a.replicas = rt, reps
	r := &api.Replica{
		Metadata: api.ObjectMeta{Name: "hello-00001-abcde", Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "node-1"},
	}
	return &supervised{agent: a, clock: fake, runtime: rt, replicas: reps, announce: an, replica: r}
}

// start runs the supervisor until the test ends (or stop).
func (s *supervised) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.agent.startSupervisor(ctx, s.replica, nil)
	s.stop = func() { cancel(); s.agent.wg.Wait() }
	t.Cleanup(s.stop)
}

// waitWrites polls until the statuses written are want, for at most 30s,
// and fails at once when they cannot become want.
func (s *supervised) waitWrites(t *testing.T, want ...statusWrite) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := s.replicas.written()
		if cmp.Equal(want, got) {
			return
		}
		// A write that differs from want's at its place will not change.
		if len(got) > len(want) || !cmp.Equal(want[:len(got)], got, cmpopts.EquateEmpty()) || time.Now().After(deadline) {
			t.Fatalf("status writes (-want +got):\n%s", cmp.Diff(want, got))
		}
		time.Sleep(time.Millisecond)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	ready    = statusWrite{Phase: api.ReplicaReady}
	starting = func(msg string, restarts int32) statusWrite {
		return statusWrite{Phase: api.ReplicaStarting, Message: msg, Restarts: restarts}
	}
)

func TestSupervisorRestartsAfterTheBackoff(t *testing.T) {
	s := newSupervised(t, nil)
	s.start(t)
	s.waitWrites(t, ready)

	s.runtime.crash(s.replica.Metadata.Name)
	s.waitWrites(t, ready, starting("exited with code 2", 1))
	// The back-off is the one waiter on the clock: no restart before it
	// has passed, one as soon as it has.
	if err := s.clock.BlockUntilContext(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
	base := s.agent.cfg.BackoffBase
	s.clock.Advance(base - time.Nanosecond)
	if got := s.replicas.written(); len(got) != 2 {
		t.Fatalf("restarted before the back-off of %s passed: %v", base, got)
	}
	s.clock.Advance(time.Nanosecond)
	s.waitWrites(t, ready, starting("exited with code 2", 1), statusWrite{Phase: api.ReplicaReady, Restarts: 1})
	s.stop()
	if diff := cmp.Diff([]string{"ready", "gone", "ready"}, s.announce.told()); diff != "" {
		t.Errorf("announcements (-want +got):\n%s", diff)
	}
}

func TestSupervisorTakesAHungReplicaOutAtTheThreshold(t *testing.T) {
	var failing atomic.Bool
	probed := make(chan struct{}, 1)
	s := newSupervised(t, func(c *Config) { c.ProbeFailureThreshold = 2 })
	s.agent.probe = func(context.Context, string, int32, string) error {
		defer func() { probed <- struct{}{} }()
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	}
	s.start(t)
	<-probed // waitReady's
	s.waitWrites(t, ready)

	// Each tick of the probe period is one probe; the test waits for it
	// before the next tick, so that none is dropped.
	tick := func() {
		t.Helper()
		s.clock.Advance(s.agent.cfg.ReadyProbePeriod)
		select {
		case <-probed:
		case <-testContext(t).Done():
			t.Fatal("no probe after a probe period")
		}
	}
	failing.Store(true)
	tick()
	if got := s.replicas.written(); len(got) != 1 {
		t.Fatalf("one failed probe of a threshold of 2 wrote %v", got)
	}
	tick()
	s.waitWrites(t, ready, starting("readiness probe failing: connection refused", 0))
	tick() // still failing: nothing more
	failing.Store(false)
	tick()
	s.waitWrites(t, ready, starting("readiness probe failing: connection refused", 0), ready)
	s.stop()
	if diff := cmp.Diff([]string{"ready", "gone", "ready"}, s.announce.told()); diff != "" {
		t.Errorf("announcements (-want +got):\n%s", diff)
	}
}

func TestSupervisorReportsStartingOnlyForSlowStarts(t *testing.T) {
	t.Run("fast", func(t *testing.T) {
		s := newSupervised(t, nil)
		s.start(t)
		s.waitWrites(t, ready)
		// The delayed Starting write was dropped, not merely late.
		s.clock.Advance(startingReportDelay)
		s.stop()
		s.waitWrites(t, ready)
	})
	t.Run("slow", func(t *testing.T) {
		s := newSupervised(t, nil)
		entered, release := make(chan struct{}), make(chan struct{})
		s.runtime.startHook = func() { close(entered); <-release }
		s.start(t)
		var once sync.Once
		t.Cleanup(func() { once.Do(func() { close(release) }) }) // before stop: a failed test must not hang
		<-entered
		s.clock.Advance(startingReportDelay - time.Nanosecond)
		if got := s.replicas.written(); len(got) != 0 {
			t.Fatalf("wrote %v before %s", got, startingReportDelay)
		}
		s.clock.Advance(time.Nanosecond)
		s.waitWrites(t, starting("", 0))
		once.Do(func() { close(release) })
		s.waitWrites(t, starting("", 0), ready)
	})
}

func TestSupervisorBacksOffFailedStartsAndCleansUp(t *testing.T) {
	s := newSupervised(t, nil)
	s.runtime.pullErr = errors.New("manifest unknown")
	s.start(t)
	failed := starting("pull image example.test/hello:v1: manifest unknown", 0)
	want := []statusWrite{failed}
	s.waitWrites(t, want...)
	for n := 1; n <= 3; n++ {
		if err := s.clock.BlockUntilContext(testContext(t), 1); err != nil {
			t.Fatal(err)
		}
		s.clock.Advance(s.agent.cfg.BackoffBase<<(n-1) - time.Nanosecond)
		if got := s.replicas.written(); len(got) != len(want) {
			t.Fatalf("attempt %d came before its back-off: %v", n+1, got)
		}
		s.clock.Advance(time.Nanosecond)
		want = append(want, failed)
		s.waitWrites(t, want...)
	}
	s.runtime.mu.Lock()
	s.runtime.pullErr = nil
	stops := len(s.runtime.stops)
	s.runtime.mu.Unlock()
	if stops != 4 {
		t.Errorf("%d clean-ups after 4 failed starts, want 4", stops)
	}
	if err := s.clock.BlockUntilContext(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(s.agent.cfg.BackoffBase << 3)
	s.waitWrites(t, append(want, ready)...)
	if got := s.replicas.written(); got[len(got)-1].Restarts != 0 {
		t.Errorf("failed starts counted as restarts: %v", got)
	}
}

// TestSupervisorEndsAnAdoptedReplicasBoostAtOnce: a container an earlier
// agent started may be in its start-up boost, for however long that agent
// was gone; the adopting agent cannot tell, and ends it before anything
// else, whether or not the container ever answers.
func TestSupervisorEndsAnAdoptedReplicasBoostAtOnce(t *testing.T) {
	for _, answers := range []bool{true, false} {
		t.Run(fmt.Sprintf("answers=%v", answers), func(t *testing.T) {
			s := newSupervised(t, nil)
			id := s.replica.Metadata.Name
			if !answers {
				s.agent.probe = func(context.Context, string, int32, string) error { return errors.New("connection refused") }
			}
			c := s.runtime.running(t, id)
			ctx, cancel := context.WithCancel(context.Background())
			s.agent.startSupervisor(ctx, s.replica, &c)
			t.Cleanup(func() { cancel(); s.agent.wg.Wait() })
			// The clock never moves: a container that does not answer is
			// still being waited for, inside its start timeout.
			waitFor(t, "the adopted replica's CPU limit", func() (bool, string) {
				got := s.runtime.cpuLimited()
				return slices.Equal(got, []string{id}), fmt.Sprint(got)
			})
			if answers {
				s.waitWrites(t, ready)
			}
			cancel()
			s.agent.wg.Wait()
			if got := s.runtime.cpuLimited(); !slices.Equal(got, []string{id}) {
				t.Errorf("CPU limit applied to %v, want once to %s", got, id)
			}
		})
	}
}

// TestSupervisorSeesACrashAtStartAtOnce: a container that exits before it
// answers fails its start then, not after StartTimeout, with its exit code.
func TestSupervisorSeesACrashAtStartAtOnce(t *testing.T) {
	s := newSupervised(t, nil)
	code := uint32(2)
	s.runtime.crashCode = &code
	s.start(t)
	s.waitWrites(t, starting("exited with code 2 before it was ready", 0))
}
