package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

// fakeOutcomes is one gateway's cumulative counters, as store.GatewayLoad
// reads them; tests add requests between canary passes.
type fakeOutcomes struct {
	mu    sync.Mutex
	revs  map[api.Key]api.Outcomes
	reads int
}

func (f *fakeOutcomes) Outcomes(context.Context, time.Time) (map[string]map[api.Key]api.Outcomes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := map[api.Key]api.Outcomes{}
	for k, o := range f.revs {
		out[k] = o.Clone()
	}
	return map[string]map[api.Key]api.Outcomes{"gw-1": out}, nil
}

// serve counts n requests of rev, errs of them errors, each taking d.
func (f *fakeOutcomes) serve(rev string, n, errs int64, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := api.Key{Namespace: "default", Name: rev}
	o := f.revs[k].Clone()
	add := api.Outcomes{Requests: n, Errors: errs, Latency: make([]int64, api.LatencyBucket(d)+1)}
	add.Latency[api.LatencyBucket(d)] = n
	o.Merge(add)
	f.revs[k] = o
}

// canaryFixture is hello-00002 in a canary of 10,50,100 every 30s from
// hello-00001, its first step just taken.
func canaryFixture(t *testing.T) (*fixture, *fakeOutcomes) {
	t.Helper()
	f := newFixture(t)
	src := &fakeOutcomes{revs: map[api.Key]api.Outcomes{}}
	f.m.UseOutcomes(src)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	f.deployCanary("example.test/hello:v1")
	f.pass()
	f.ready("hello-00001")
	f.pass()
	f.deployCanary("example.test/hello:v2")
	f.pass()
	f.ready("hello-00002")
	f.pass()
	if got := f.traffic(); got != "[{hello-00001 90} {hello-00002 10}]" {
		t.Fatalf("traffic at the first step: %s", got)
	}
	f.canaryPass() // the gateways' counters start here
	return f, src
}

func (f *fixture) deployCanary(image string) {
	f.t.Helper()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: image,
		Canary: &api.CanaryStrategy{Steps: []int32{10, 50, 100}, StepDuration: api.Duration{Duration: 30 * time.Second}}}}
	api.SetDefaults(&fn.Spec)
	if _, err := f.store.PutFunction(f.ctx, fn, store.CreateOrReplace); err != nil {
		f.t.Fatalf("deploy %s: %v", image, err)
	}
}

func (f *fixture) canaryPass() {
	f.t.Helper()
	if err := f.m.CanaryPass(f.ctx); err != nil {
		f.t.Fatalf("canary pass: %v", err)
	}
}

func (f *fixture) rollout() *api.Rollout {
	f.t.Helper()
	ro, err := store.Get[api.Rollout](f.ctx, f.store, api.Key{Namespace: "default", Name: "hello"})
	if err != nil {
		f.t.Fatal(err)
	}
	return ro
}

func TestCanaryReachesAllOfTheTraffic(t *testing.T) {
	f, src := canaryFixture(t)
	for _, step := range []struct {
		traffic string
		phase   api.RolloutPhase
	}{
		{"[{hello-00001 50} {hello-00002 50}]", api.RolloutProgressing},
		{"[{hello-00002 100}]", api.RolloutSucceeded},
	} {
		src.serve("hello-00002", 50, 0, 5*time.Millisecond)
		src.serve("hello-00001", 450, 1, 6*time.Millisecond)
		f.clock.Advance(10 * time.Second)
		f.canaryPass()
		if got := f.traffic(); got == step.traffic {
			t.Fatalf("the step ended after 10s of 30s: %s", got)
		}
		f.clock.Advance(20 * time.Second)
		f.canaryPass()
		if got := f.traffic(); got != step.traffic {
			t.Fatalf("traffic %s, want %s", got, step.traffic)
		}
		ro := f.rollout()
		if ro.Status.Phase != step.phase || ro.Status.Analysis == nil || ro.Status.Analysis.Canary.Requests != 50 ||
			ro.Status.Analysis.Baseline.Requests != 450 {
			t.Fatalf("rollout %s, analysis %+v; want %s on 50 and 450 requests", ro.Status.Phase, ro.Status.Analysis, step.phase)
		}
	}
	if ro := f.rollout(); ro.Status.Finished.IsZero() || ro.Status.Reason != "" {
		t.Errorf("a rollout that succeeded: finished %v, reason %q", ro.Status.Finished, ro.Status.Reason)
	}
}

func TestCanaryThatFailsRollsBackAtOnce(t *testing.T) {
	f, src := canaryFixture(t)
	src.serve("hello-00002", 25, 25, time.Millisecond)
	src.serve("hello-00001", 200, 0, time.Millisecond)
	f.clock.Advance(time.Second)
	f.canaryPass()
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Fatalf("traffic after the canary answered 500s: %s", got)
	}
	ro := f.rollout()
	if ro.Status.Phase != api.RolloutRolledBack || !strings.Contains(ro.Status.Reason, "error rate 100.0% against 0.0%") {
		t.Errorf("rollout %s, reason %q; want rolled back for its error rate", ro.Status.Phase, ro.Status.Reason)
	}
	// Rolled back, it stays so: later passes do nothing.
	src.serve("hello-00002", 25, 0, time.Millisecond)
	f.clock.Advance(time.Minute)
	f.canaryPass()
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Errorf("traffic moved after the rollback: %s", got)
	}
}

func TestCanaryThatIsSlowerRollsBackAtTheStepsEnd(t *testing.T) {
	f, src := canaryFixture(t)
	src.serve("hello-00002", 40, 0, 600*time.Millisecond)
	src.serve("hello-00001", 400, 0, 2*time.Millisecond)
	f.clock.Advance(5 * time.Second)
	f.canaryPass()
	if ro := f.rollout(); ro.Status.Phase != api.RolloutProgressing {
		t.Fatalf("a slow canary was judged before its step's end: %s %q", ro.Status.Phase, ro.Status.Reason)
	}
	f.clock.Advance(25 * time.Second)
	f.canaryPass()
	ro := f.rollout()
	if ro.Status.Phase != api.RolloutRolledBack || !strings.Contains(ro.Status.Reason, "p99 latency") {
		t.Errorf("rollout %s, reason %q; want rolled back for its latency", ro.Status.Phase, ro.Status.Reason)
	}
	if got := f.traffic(); got != "[{hello-00001 100}]" {
		t.Errorf("traffic after the rollback: %s", got)
	}
}

func TestCanaryLeftAsSetWhenTheTrafficIsSetByHand(t *testing.T) {
	f, _ := canaryFixture(t)
	f.setTraffic(api.TrafficTarget{Revision: "hello-00001", Percent: 70}, api.TrafficTarget{Revision: "hello-00002", Percent: 30})
	f.canaryPass()
	if ro := f.rollout(); ro.Status.Phase != api.RolloutAborted {
		t.Errorf("rollout %s, want aborted", ro.Status.Phase)
	}
	f.clock.Advance(time.Minute)
	f.canaryPass()
	if got := f.traffic(); got != "[{hello-00001 70} {hello-00002 30}]" {
		t.Errorf("the traffic set by hand changed: %s", got)
	}
}

// TestCanaryCarriedOnByANewLeader: a leader that takes over mid-step has
// no counters of its own yet; it counts from its first look and judges
// the step at its end as the old leader would have.
func TestCanaryCarriedOnByANewLeader(t *testing.T) {
	f, src := canaryFixture(t)
	src.serve("hello-00002", 30, 30, time.Millisecond) // the old leader's evidence goes with it
	f.m.ForgetEvidence()
	f.clock.Advance(10 * time.Second)
	f.canaryPass()
	if ro := f.rollout(); ro.Status.Phase != api.RolloutProgressing {
		t.Fatalf("the new leader judged on what it did not count: %s %q", ro.Status.Phase, ro.Status.Reason)
	}
	src.serve("hello-00002", 50, 0, time.Millisecond)
	src.serve("hello-00001", 450, 0, time.Millisecond)
	f.clock.Advance(20 * time.Second)
	f.canaryPass()
	ro := f.rollout()
	if ro.Status.Percent != 50 || ro.Status.Analysis == nil || ro.Status.Analysis.Canary.Requests != 50 {
		t.Errorf("rollout at %d%% on %+v, want 50%% on the 50 requests the new leader counted", ro.Status.Percent, ro.Status.Analysis)
	}
}

// TestCanaryCountsARevisionsFirstRequests: a gateway that reports a
// revision for the first time, having reported none of its requests
// before, has all of them counted.
func TestCanaryCountsARevisionsFirstRequests(t *testing.T) {
	f, src := canaryFixture(t)
	src.serve("hello-00001", 450, 0, time.Millisecond)
	f.canaryPass() // hello-00002 not reported yet: it had no request
	src.serve("hello-00002", 25, 25, time.Millisecond)
	f.clock.Advance(time.Second)
	f.canaryPass()
	if ro := f.rollout(); ro.Status.Phase != api.RolloutRolledBack {
		t.Errorf("rollout %s: the canary's first 25 failed requests were not counted", ro.Status.Phase)
	}
}

func TestPassPrunesRevisionsPastKeepRevisions(t *testing.T) {
	f := newFixture(t)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	for i := 1; i <= 5; i++ {
		fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"},
			Spec: api.FunctionSpec{Image: "example.test/hello:v" + string(rune('0'+i)), KeepRevisions: 2}}
		api.SetDefaults(&fn.Spec)
		if _, err := f.store.PutFunction(f.ctx, fn, store.CreateOrReplace); err != nil {
			t.Fatal(err)
		}
		f.pass()
		f.ready(api.RevisionName("hello", int64(i)))
		f.pass()
	}
	f.pass()
	revs, _, err := store.List[api.Revision](f.ctx, f.store, store.Scope{Namespace: "default", Function: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range revs {
		names = append(names, r.Metadata.Name)
	}
	// hello-00005 serves, hello-00004 is where a rollback goes, and two
	// more are kept: hello-00002 and hello-00003.
	if got := strings.Join(names, " "); got != "hello-00002 hello-00003 hello-00004 hello-00005" {
		t.Errorf("revisions left: %s", got)
	}
}

// TestCanaryLoopIdleWithoutCanaries: with no canary in progress the loop
// reads no gateway report; it starts reading once a pass starts one, and
// stops when the canary ends.
func TestCanaryLoopIdleWithoutCanaries(t *testing.T) {
	f := newFixture(t)
	src := &fakeOutcomes{revs: map[api.Key]api.Outcomes{}}
	f.m.UseOutcomes(src)
	f.node("node-a", f.clock.Now().Add(time.Hour))
	f.deploy("example.test/hello:v1", 1)
	f.pass()
	f.ready("hello-00001")
	f.pass()
	f.deploy("example.test/hello:v2", 1)
	f.pass()
	f.ready("hello-00002")
	f.pass() // all at once: no canary
	f.canaryPass()
	if src.reads != 0 {
		t.Fatalf("the canary loop read the gateways' reports %d times with no canary in progress", src.reads)
	}
	f.deployCanary("example.test/hello:v3")
	f.pass()
	f.ready("hello-00003")
	f.pass()
	f.canaryPass()
	if src.reads != 1 {
		t.Fatalf("a canary in progress: %d reads of the reports, want 1", src.reads)
	}
	f.setTraffic(api.TrafficTarget{Revision: "hello-00003", Percent: 100})
	f.canaryPass() // aborted
	f.pass()
	f.canaryPass()
	if src.reads != 2 {
		t.Errorf("after the canary ended: %d reads of the reports, want still 2", src.reads)
	}
}
