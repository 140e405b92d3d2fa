package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/nodeagent/containers"
)

// fakeRuntime runs each "container" as a TCP listener on loopback, so the
// agent's real probes work, and records what the agent asked of it.
type fakeRuntime struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	starts     int
	stops      []string
	limited    []string // ApplyCPULimit's ids, in order
	pid        uint32
	startTime  time.Duration // how long Start takes
	startHook  func()        // called as Start begins, when set
	pullErr    error         // what EnsureImage returns
	// crashCode, when set, makes each started container exit with it at
	// once, before it listens.
	crashCode *uint32
}

type fakeContainer struct {
	c    containers.Container
	ln   net.Listener
	exit chan containers.Exit
}

// newFakeRuntime returns a fake runtime whose containers stop listening
// when the test ends.
func newFakeRuntime(t *testing.T) *fakeRuntime {
	f := &fakeRuntime{containers: map[string]*fakeContainer{}, pid: 100}
	t.Cleanup(f.closeAll)
	return f
}

func (f *fakeRuntime) EnsureImage(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pullErr
}

func (f *fakeRuntime) listen(id string) (*fakeContainer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	f.pid++
	return &fakeContainer{ln: ln, exit: make(chan containers.Exit, 1),
		c: containers.Container{ID: id, IP: "127.0.0.1", Port: int32(port), PID: f.pid, Running: true}}, nil
}

func (f *fakeRuntime) Start(_ context.Context, s containers.Spec) (containers.Container, error) {
	f.mu.Lock()
	took, hook := f.startTime, f.startHook
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	time.Sleep(took)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.listen(s.ID)
	if err != nil {
		return containers.Container{}, err
	}
	if f.crashCode != nil {
		c.ln.Close()
		c.exit <- containers.Exit{Code: *f.crashCode, At: time.Now()}
	}
	f.containers[s.ID] = c
	f.starts++
	return c.c, nil
}

func (f *fakeRuntime) Wait(_ context.Context, id string) (<-chan containers.Exit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return nil, errors.New("no such container")
	}
	return c.exit, nil
}

func (f *fakeRuntime) Restart(_ context.Context, id string) (containers.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.listen(id)
	if err != nil {
		return containers.Container{}, err
	}
	f.containers[id] = c
	return c.c, nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.ln.Close()
		delete(f.containers, id)
	}
	f.stops = append(f.stops, id)
	return nil
}

// ApplyCPULimit records that id's start-up boost ended.
func (f *fakeRuntime) ApplyCPULimit(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limited = append(f.limited, id)
	return nil
}

func (f *fakeRuntime) cpuLimited() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.limited...)
}

// running adds a container as an earlier agent left it: running, its
// replica's supervisor gone.
func (f *fakeRuntime) running(t *testing.T, id string) containers.Container {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.listen(id)
	if err != nil {
		t.Fatal(err)
	}
	f.containers[id] = c
	return c.c
}

func (f *fakeRuntime) List(context.Context) ([]containers.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []containers.Container
	for _, c := range f.containers {
		out = append(out, c.c)
	}
	return out, nil
}

func (f *fakeRuntime) RemoveOrphans(_ context.Context, keep func(string) bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var removed []string
	for id, c := range f.containers {
		if !keep(id) {
			c.ln.Close()
			delete(f.containers, id)
			removed = append(removed, id)
		}
	}
	return removed, nil
}

// closeAll closes every container's listener, so that no accept loop
// outlives the test.
func (f *fakeRuntime) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		c.ln.Close()
	}
}

// crash makes a container's process exit.
func (f *fakeRuntime) crash(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	c.ln.Close()
	c.c.Running = false
	c.exit <- containers.Exit{Code: 2, At: time.Now()}
}

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s; last: %s", what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startAgent(t *testing.T, in *controlplanetest.Instance, f *fakeRuntime) (stop func()) {
	t.Helper()
	return startAgentWith(t, in, f, nil)
}

// startAgentWith starts an agent whose config mutate changed, when set.
func startAgentWith(t *testing.T, in *controlplanetest.Instance, f *fakeRuntime, mutate func(*Config)) (stop func()) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "node-1"
	cfg.MilliCPU, cfg.MemoryBytes = 2000, 4<<30
	cfg.BackoffBase, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.ReadyProbePeriod = 20 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	nodeAPI, _ := in.NodeClient(cfg.NodeName, cfg.Address)
	a, err := New(cfg, nodeAPI,
		func(context.Context, *api.Node) (Runtime, error) { return f, nil }, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

func replicas(t *testing.T, c *client.Client) []api.Replica {
	t.Helper()
	l, err := client.List[api.Replica](context.Background(), c, "default", url.Values{"function": {"hello"}})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestAgentRunsRestartsAndStopsReplicas(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	f := newFakeRuntime(t)
	stop := startAgent(t, in, f)
	defer stop()

	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	fn.Spec.Scaling.MinScale = 2
	if _, err := c.PutFunction(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two Ready replicas with addresses and start latency", func() (bool, string) {
		reps := replicas(t, c)
		ready := 0
		for _, r := range reps {
			if r.Status.Phase == api.ReplicaReady && r.Status.IP != "" && r.Status.Port != 0 && r.Status.StartLatency != "" {
				ready++
			}
		}
		return ready == 2, fmt.Sprintf("%+v", reps)
	})

	// A crash is restarted in place, counted, and reported Ready again.
	victim := replicas(t, c)[0].Metadata.Name
	f.crash(victim)
	waitFor(t, "the crashed replica restarted", func() (bool, string) {
		for _, r := range replicas(t, c) {
			if r.Metadata.Name == victim {
				return r.Status.Restarts == 1 && r.Status.Phase == api.ReplicaReady, fmt.Sprintf("%+v", r.Status)
			}
		}
		return false, "replica gone"
	})

	// Scale to zero: the agent stops both containers.
	sc, err := client.Get[api.Scale](context.Background(), c, api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	sc.Spec.Replicas = 0
	sc.Metadata.ResourceVersion = ""
	fn.Spec.Scaling.MinScale = 0
	if _, err := c.PutFunction(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(context.Background(), "PUT", client.ObjectPath[api.Scale](api.Key{Namespace: "default", Name: "hello-00001"}), sc, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hello-00001's containers stopped", func() (bool, string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := 0
		for id := range f.containers {
			if len(id) > 11 && id[:11] == "hello-00001" {
				n++
			}
		}
		return n == 0, fmt.Sprint(f.stops)
	})
}

func TestRestartedAgentAdoptsRunningContainers(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	f := newFakeRuntime(t)
	stop := startAgent(t, in, f)
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	fn.Spec.Scaling.MinScale = 1 // no traffic here: keep the autoscaler from scaling to zero
	if _, err := c.PutFunction(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a Ready replica", func() (bool, string) {
		reps := replicas(t, c)
		return len(reps) == 1 && reps[0].Status.Phase == api.ReplicaReady, fmt.Sprintf("%+v", reps)
	})
	// An orphan: a container no replica claims.
	f.mu.Lock()
	orphan, _ := f.listen("ghost-00001-xxxxx")
	f.containers["ghost-00001-xxxxx"] = orphan
	f.mu.Unlock()

	for i := range 3 {
		stop()
		stop = startAgent(t, in, f)
		waitFor(t, fmt.Sprintf("agent %d to adopt and clean up", i+2), func() (bool, string) {
			f.mu.Lock()
			_, orphan := f.containers["ghost-00001-xxxxx"]
			f.mu.Unlock()
			reps := replicas(t, c)
			return !orphan && len(reps) == 1 && reps[0].Status.Phase == api.ReplicaReady, fmt.Sprintf("orphan %v, %+v", orphan, reps)
		})
	}
	stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.starts != 1 {
		t.Errorf("containers started %d times across 3 agent restarts, want 1 (adopted)", f.starts)
	}
	if _, ok := f.containers["ghost-00001-xxxxx"]; ok {
		t.Error("the orphan container was not removed")
	}
	if r := replicas(t, c); r[0].Status.Restarts != 0 {
		t.Errorf("restarts %d, want 0", r[0].Status.Restarts)
	}
}

// TestStopReplicasOnExit: an agent told to (surge up) stops every
// replica of its node when it stops, where a default agent (surge agent,
// TestRestartedAgentAdoptsRunningContainers) leaves them running.
func TestStopReplicasOnExit(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	f := newFakeRuntime(t)
	stop := startAgentWith(t, in, f, func(c *Config) { c.StopReplicasOnExit = true })
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
	fn.Spec.Scaling.MinScale = 2
	if _, err := c.PutFunction(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two Ready replicas", func() (bool, string) {
		reps := replicas(t, c)
		ready := 0
		for _, r := range reps {
			if r.Status.Phase == api.ReplicaReady {
				ready++
			}
		}
		return ready == 2, fmt.Sprintf("%+v", reps)
	})
	stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.containers) != 0 || len(f.stops) < 2 {
		t.Errorf("after the agent stopped: %d containers left, stops %v; want none left, both stopped", len(f.containers), f.stops)
	}
}

func TestStartingIsReportedOnlyForSlowStarts(t *testing.T) {
	for _, tt := range []struct {
		name      string
		startTime time.Duration
		want      []api.ReplicaPhase
	}{
		// One status write: Pending (the controller's) to Ready.
		{"fast start", 0, []api.ReplicaPhase{api.ReplicaReady}},
		{"slow start", 3 * startingReportDelay, []api.ReplicaPhase{api.ReplicaStarting, api.ReplicaReady}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := controlplanetest.Start(t)
			c := in.Client()
			f := newFakeRuntime(t)
			f.startTime = tt.startTime
			stop := startAgent(t, in, f)
			defer stop()

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			before, err := client.List[api.Replica](ctx, c, "default", nil)
			if err != nil {
				t.Fatal(err)
			}
			var phases []api.ReplicaPhase
			watched := make(chan error, 1)
			go func() {
				opts := client.WatchOptions{ResourceVersion: before.ResourceVersion}
				watched <- client.Watch[api.Replica](ctx, c, "default", opts, func(ev api.WatchEvent[*api.Replica]) error {
					p := ev.Object.Status.Phase
					if p == "" || p == api.ReplicaPending || len(phases) > 0 && phases[len(phases)-1] == p {
						return nil
					}
					if phases = append(phases, p); p == api.ReplicaReady {
						return errStopWatch
					}
					return nil
				})
			}()
			fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}
			fn.Spec.Scaling.MinScale = 1
			if _, err := c.PutFunction(ctx, fn); err != nil {
				t.Fatal(err)
			}
			if err := <-watched; !errors.Is(err, errStopWatch) {
				t.Fatalf("watch: %v", err)
			}
			if fmt.Sprint(phases) != fmt.Sprint(tt.want) {
				t.Errorf("phases reported %v, want %v", phases, tt.want)
			}
		})
	}
}

var errStopWatch = errors.New("seen Ready")
