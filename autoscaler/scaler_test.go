package autoscaler

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

// revision is a revision of function "hello" in namespace "default", made
// at created.
func revision(n int, created time.Time, spec api.FunctionSpec) api.Revision {
	name := api.RevisionName("hello", int64(n))
	return api.Revision{
		Metadata: api.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: created},
		Spec:     api.RevisionSpec{Function: "hello", Number: int64(n), Template: spec},
	}
}

func scaleOf(rev api.Revision, ready int32) api.Scale {
	return api.Scale{Metadata: api.ObjectMeta{Namespace: rev.Metadata.Namespace, Name: rev.Metadata.Name},
		Status: api.ScaleStatus{ReadyReplicas: ready}}
}

func keyOf(rev api.Revision) api.Key { return api.KeyOf(&rev) }

func newScaler(t *testing.T) *Scaler {
	t.Helper()
	s, err := NewScaler(DefaultScalerConfig())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fromDecider stands for what a fresh Decider decides on the same sample.
const fromDecider = -1

func TestScalerRules(t *testing.T) {
	now := t0
	window := DefaultConfig().StableWindow
	deadline := DefaultScalerConfig().ProgressDeadline
	hold := DefaultScalerConfig().ActivationHold
	busy := Sample{Concurrency: 5, Requests: 20}
	type rev struct {
		spec    api.FunctionSpec
		age     time.Duration
		ready   int32
		serving bool // a traffic target above 0%
		zero    bool // a traffic target at 0%
		tagged  bool // a traffic target at 0% with a tag
		// rollingOut: the function's latest revision, not yet its latest
		// Ready one.
		rollingOut bool
		load       Sample
		// activated is how long ago the revision was activated; 0 means
		// never. demand is the activation's (0: 1).
		activated time.Duration
		demand    int
	}
	minScale := func(n int32) api.FunctionSpec {
		return api.FunctionSpec{Concurrency: 1, Scaling: api.ScalingPolicy{MinScale: n}}
	}
	cc1 := api.FunctionSpec{Concurrency: 1}
	cases := []struct {
		name string
		rev  rev
		// recorded is what the Decider should record; the load when zero.
		recorded Sample
		desired  int32 // or fromDecider
		reason   Reason
	}{
		{name: "serving and busy: the Decider's decision",
			rev: rev{spec: cc1, age: time.Hour, ready: 1, serving: true, load: busy}, desired: fromDecider, reason: ReasonPanic},
		{name: "serving, idle, past its first window: the Decider's zero",
			rev: rev{spec: cc1, age: window, serving: true}, desired: 0, reason: ReasonToZero},
		{name: "serving, idle, in its first window: initial scale",
			rev: rev{spec: cc1, age: window - time.Second, serving: true}, desired: 1, reason: ReasonInitialScale},
		{name: "initial scale is MinScale; the Decider's bound meets it",
			rev: rev{spec: minScale(3), age: time.Second, serving: true}, desired: 3, reason: ReasonBound},
		{name: "serving, busy beyond the initial scale in its first window: the Decider's",
			rev: rev{spec: cc1, age: time.Second, ready: 1, serving: true, load: busy}, desired: fromDecider, reason: ReasonPanic},
		{name: "the first window is the spec's stable window",
			rev:     rev{spec: api.FunctionSpec{Scaling: api.ScalingPolicy{StableWindow: api.Seconds(10)}}, age: 10 * time.Second, serving: true},
			desired: 0, reason: ReasonToZero},
		{name: "rolling out, idle: initial scale",
			rev: rev{spec: cc1, age: time.Second, rollingOut: true}, desired: 1, reason: ReasonRollingOut},
		{name: "rolling out with MinScale: MinScale",
			rev: rev{spec: minScale(2), age: time.Second, rollingOut: true}, desired: 2, reason: ReasonRollingOut},
		{name: "rolling out, busy: the Decider's count, above the initial scale",
			rev: rev{spec: cc1, age: time.Second, ready: 1, rollingOut: true, load: busy}, desired: fromDecider, reason: ReasonRollingOut},
		{name: "rolling out until just before the deadline",
			rev: rev{spec: cc1, age: deadline - time.Second, rollingOut: true}, desired: 1, reason: ReasonRollingOut},
		{name: "rolling out past the deadline: given up, even with load",
			rev: rev{spec: minScale(2), age: deadline, ready: 1, rollingOut: true, load: busy}, desired: 0, reason: ReasonNotReady},
		{name: "latest but not Ready and serving (a rollback to it): the serving rules",
			rev: rev{spec: cc1, age: time.Second, rollingOut: true, serving: true}, desired: 1, reason: ReasonInitialScale},
		{name: "no traffic, idle: zero whatever its MinScale",
			rev: rev{spec: minScale(2), age: time.Hour, ready: 2}, desired: 0, reason: ReasonNoTraffic},
		{name: "no traffic beats the initial scale of a new revision",
			rev: rev{spec: cc1, age: time.Second}, desired: 0, reason: ReasonNoTraffic},
		{name: "a traffic target at 0% is no traffic",
			rev: rev{spec: cc1, age: time.Hour, ready: 1, zero: true}, desired: 0, reason: ReasonNoTraffic},
		{name: "tagged at 0%, idle past its first window: the Decider's zero, after its keep-alive",
			rev: rev{spec: cc1, age: window, tagged: true}, desired: 0, reason: ReasonToZero},
		{name: "tagged at 0% with MinScale: kept, as a revision with traffic",
			rev: rev{spec: minScale(2), age: time.Hour, ready: 2, tagged: true}, desired: 2, reason: ReasonBound},
		{name: "tagged at 0% with requests: the Decider's",
			rev: rev{spec: cc1, age: time.Hour, ready: 1, tagged: true, load: busy}, desired: fromDecider, reason: ReasonPanic},
		{name: "no traffic but requests in flight: the Decider's, draining",
			rev: rev{spec: cc1, age: time.Hour, ready: 3, load: Sample{Concurrency: 2}}, desired: fromDecider, reason: ReasonStable},
		{name: "no traffic but requests arriving: the Decider's",
			rev: rev{spec: cc1, age: time.Hour, ready: 1, load: Sample{Requests: 3}}, desired: fromDecider, reason: ReasonKeepAlive},
		{name: "activated at zero: one request in flight",
			rev:      rev{spec: cc1, age: time.Hour, serving: true, activated: time.Second},
			recorded: Sample{Concurrency: 1, Requests: 1}, desired: fromDecider, reason: ReasonStable},
		{name: "activated without traffic: no drain while it counts",
			rev:      rev{spec: cc1, age: time.Hour, activated: hold - time.Nanosecond},
			recorded: Sample{Concurrency: 1, Requests: 1}, desired: fromDecider, reason: ReasonStable},
		{name: "activated longer ago than the hold: not counted",
			rev: rev{spec: cc1, age: time.Hour, serving: true, activated: hold}, desired: 0, reason: ReasonToZero},
		{name: "activated by a burst: its demand in flight",
			rev:      rev{spec: cc1, age: time.Hour, serving: true, activated: time.Second, demand: 500},
			recorded: Sample{Concurrency: 500, Requests: 500}, desired: 715, reason: ReasonPanic},
		{name: "activated while the gateways show load: theirs counts",
			rev:     rev{spec: cc1, age: time.Hour, ready: 1, serving: true, load: busy, activated: time.Second},
			desired: fromDecider, reason: ReasonPanic},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := revision(1, now.Add(-c.rev.age), c.rev.spec)
			k := keyOf(r)
			fn := api.Function{Metadata: api.ObjectMeta{Namespace: "default", Name: "hello"}}
			if c.rev.rollingOut {
				fn.Status.LatestRevision = r.Metadata.Name
			}
			in := Input{
				Scales: []api.Scale{scaleOf(r, c.rev.ready)}, Revisions: []api.Revision{r}, Functions: []api.Function{fn},
				Load: map[api.Key]Load{k: {Sample: c.rev.load, RPS: c.rev.load.Requests}},
			}
			if c.rev.serving || c.rev.zero || c.rev.tagged {
				percent, tag := int32(100), ""
				if c.rev.zero || c.rev.tagged {
					percent = 0
				}
				if c.rev.tagged {
					tag = "next"
				}
				in.Traffic = []api.Traffic{{Metadata: api.ObjectMeta{Namespace: "default", Name: "hello"},
					Spec: api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: r.Metadata.Name, Percent: percent, Tag: tag}}}}}
			}
			recorded := c.recorded
			if recorded == (Sample{}) {
				recorded = c.rev.load
			}
			want := RevisionDecision{Revision: k, Function: "hello", Desired: c.desired, Reason: c.reason,
				Load: Load{Sample: recorded, RPS: c.rev.load.Requests}}
			if c.reason == ReasonNotReady {
				want.ProgressDeadline = deadline
			}
			// The Decider's own decision, on a Decider fed the same sample.
			ref, err := NewDecider(DefaultConfig(), policyFor(&c.rev.spec, 0))
			if err != nil {
				t.Fatal(err)
			}
			ref.Record(now, recorded)
			dec := ref.Scale(now, int(c.rev.ready))
			want.Panic = dec.Panic
			if c.desired == fromDecider {
				want.Desired = int32(dec.Desired)
				if want.Desired < 1 {
					t.Fatalf("bad case: the Decider asks for %d replicas, want a case where it asks for some", want.Desired)
				}
				if c.reason != ReasonRollingOut && dec.Reason != c.reason {
					t.Fatalf("bad case: the Decider's reason is %v, want %v", dec.Reason, c.reason)
				}
			}

			s := newScaler(t)
			if c.rev.activated > 0 {
				if _, err := s.Activate(now.Add(-c.rev.activated), &r, c.rev.demand); err != nil {
					t.Fatal(err)
				}
			}
			res, err := s.Decide(now, in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(Result{Revisions: []RevisionDecision{want}}, res); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScalerFollowsEachRevisionsDecider(t *testing.T) {
	// Two serving revisions with their own loads: each decision over time
	// is its own Decider's, whose state carries from tick to tick.
	spec := api.FunctionSpec{Concurrency: 1, Scaling: api.ScalingPolicy{ScaleToZeroGrace: api.Seconds(30)}}
	revs := []api.Revision{revision(1, at(-3600), spec), revision(2, at(-3600), spec)}
	loads := []func(sec int) Sample{stepAt(20, 1, 8), timer(5, 100)}
	traffic := api.Traffic{Metadata: api.ObjectMeta{Namespace: "default", Name: "hello"}, Spec: api.TrafficSpec{Targets: []api.TrafficTarget{
		{Revision: revs[0].Metadata.Name, Percent: 50}, {Revision: revs[1].Metadata.Name, Percent: 50}}}}
	s := newScaler(t)
	var refs []*rig
	for range revs {
		refs = append(refs, newRig(t, DefaultConfig(), policyFor(&spec, 0)))
	}
	ready := []int32{0, 0}
	changes := 0
	for sec := range 300 {
		in := Input{Revisions: revs, Traffic: []api.Traffic{traffic}, Load: map[api.Key]Load{}}
		for i, r := range revs {
			in.Scales = append(in.Scales, scaleOf(r, ready[i]))
			in.Load[keyOf(r)] = Load{Sample: loads[i](sec)}
		}
		res, err := s.Decide(at(sec), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Revisions) != len(revs) {
			t.Fatalf("t=%d: %d decisions for %d revisions", sec, len(res.Revisions), len(revs))
		}
		for i, got := range res.Revisions {
			refs[i].run(sec, sec+1, loads[i])
			want := refs[i].dec[sec]
			if got.Revision != keyOf(revs[i]) || int(got.Desired) != want.Desired || got.Reason != want.Reason || got.Panic != want.Panic {
				t.Fatalf("t=%d: %s decided %d (%v, panic %t), its Decider alone %d (%v, panic %t)",
					sec, got.Revision, got.Desired, got.Reason, got.Panic, want.Desired, want.Reason, want.Panic)
			}
			if got.Desired != ready[i] {
				changes++
			}
			ready[i] = got.Desired
		}
	}
	if changes < 4 {
		t.Errorf("the loads changed the scale %d times, want a test that moves it", changes)
	}
}

func TestScalerSkipsScalesWithoutRevisions(t *testing.T) {
	r := revision(1, at(-3600), api.FunctionSpec{})
	s := newScaler(t)
	res, err := s.Decide(at(0), Input{Scales: []api.Scale{scaleOf(r, 1)}})
	if err != nil || len(res.Revisions) != 0 || len(res.Gone) != 0 {
		t.Errorf("a Scale without its Revision: %+v, %v; want no decision", res, err)
	}
}

func TestScalerForgetsGoneRevisions(t *testing.T) {
	spec := api.FunctionSpec{Concurrency: 1}
	a, b := revision(1, at(-3600), spec), revision(2, at(-3600), spec)
	both := Input{Scales: []api.Scale{scaleOf(b, 0), scaleOf(a, 0)}, Revisions: []api.Revision{a, b}}
	s := newScaler(t)
	res, err := s.Decide(at(0), both)
	if err != nil {
		t.Fatal(err)
	}
	if got := []api.Key{res.Revisions[0].Revision, res.Revisions[1].Revision}; !cmp.Equal(got, []api.Key{keyOf(b), keyOf(a)}) {
		t.Errorf("decisions in the order %v, want the Scales' order", got)
	}
	if _, err := s.Activate(at(1), &b, 1); err != nil {
		t.Fatal(err)
	}
	res, err = s.Decide(at(1), Input{Scales: []api.Scale{scaleOf(a, 0)}, Revisions: []api.Revision{a}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.Key{keyOf(b)}, res.Gone); diff != "" {
		t.Errorf("Gone (-want +got):\n%s", diff)
	}
	// b is back: a new Decider, and its activation went with the old one,
	// so nothing holds off the drain of a revision without traffic.
	res, err = s.Decide(at(2), both)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Revisions[0]; got.Desired != 0 || got.Reason != ReasonNoTraffic || len(res.Gone) != 0 {
		t.Errorf("b back without traffic: %d (%v), gone %v; want 0 (no traffic), none gone", got.Desired, got.Reason, res.Gone)
	}
}

func TestScalerReportsBadPoliciesAndDecidesTheRest(t *testing.T) {
	bad := revision(1, at(-3600), api.FunctionSpec{Scaling: api.ScalingPolicy{MinScale: 5, MaxScale: 2}})
	good := revision(2, at(-3600), api.FunctionSpec{})
	in := Input{Scales: []api.Scale{scaleOf(bad, 0), scaleOf(good, 0)}, Revisions: []api.Revision{bad, good}}
	s := newScaler(t)
	for sec := range 2 { // the error comes every tick, not only the first
		res, err := s.Decide(at(sec), in)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), keyOf(bad).String()) {
			t.Errorf("t=%d: error %v, want ErrInvalidConfig naming %s", sec, err, keyOf(bad))
		}
		if len(res.Revisions) != 1 || res.Revisions[0].Revision != keyOf(good) || len(res.Gone) != 0 {
			t.Errorf("t=%d: %+v, want a decision for %s only, none gone", sec, res, keyOf(good))
		}
	}
}

func TestNewScalerReportsEveryBadField(t *testing.T) {
	cfg := DefaultScalerConfig()
	cfg.Decider.SamplePeriod = 0
	cfg.ProgressDeadline = 0
	cfg.ActivationHold = -time.Second
	_, err := NewScaler(cfg)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewScaler = %v, want ErrInvalidConfig", err)
	}
	for _, field := range []string{"SamplePeriod", "ProgressDeadline", "ActivationHold"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

func TestStatusReason(t *testing.T) {
	for want, d := range map[string]RevisionDecision{
		"not ready in 10m0s": {Reason: ReasonNotReady, ProgressDeadline: 10 * time.Minute},
		"rolling out":        {Reason: ReasonRollingOut},
		"no traffic":         {Reason: ReasonNoTraffic},
		"keep-alive":         {Reason: ReasonKeepAlive},
	} {
		if got := d.StatusReason(); got != want {
			t.Errorf("StatusReason(%v) = %q, want %q", d.Reason, got, want)
		}
	}
}

func TestPolicyFor(t *testing.T) {
	for _, c := range []struct {
		name       string
		spec       api.FunctionSpec
		clusterMax int
		want       Policy
	}{
		{"defaults", api.FunctionSpec{}, 0,
			Policy{Targets: []Target{{Metric: MetricConcurrency}}, KeepAlive: KeepAliveAdaptive}},
		// No maxScale of its own is the cluster's bound, not none: one
		// report of a huge load asks for no more.
		{"no maxScale takes the cluster's", api.FunctionSpec{}, 1000,
			Policy{MaxReplicas: 1000, Targets: []Target{{Metric: MetricConcurrency}}, KeepAlive: KeepAliveAdaptive}},
		{"a maxScale above the cluster's takes the cluster's", api.FunctionSpec{Scaling: api.ScalingPolicy{MinScale: 5, MaxScale: 50}}, 4,
			Policy{MinReplicas: 4, MaxReplicas: 4, Targets: []Target{{Metric: MetricConcurrency}}, KeepAlive: KeepAliveAdaptive}},
		{"a maxScale below the cluster's stays", api.FunctionSpec{Scaling: api.ScalingPolicy{MaxScale: 9}}, 1000,
			Policy{MaxReplicas: 9, Targets: []Target{{Metric: MetricConcurrency}}, KeepAlive: KeepAliveAdaptive}},
		{"bounds, limit and rps target",
			api.FunctionSpec{Concurrency: 4, Scaling: api.ScalingPolicy{MinScale: 1, MaxScale: 9, Metric: api.MetricRPS, Target: 50}}, 0,
			Policy{MinReplicas: 1, MaxReplicas: 9, ContainerConcurrency: 4, Targets: []Target{{Metric: MetricRPS, Value: 50}}, KeepAlive: KeepAliveAdaptive}},
		{"a grace is a fixed keep-alive",
			api.FunctionSpec{Scaling: api.ScalingPolicy{StableWindow: api.Seconds(10), ScaleToZeroGrace: api.Seconds(60)}}, 0,
			Policy{Targets: []Target{{Metric: MetricConcurrency}}, StableWindow: 10 * time.Second, ScaleToZeroGrace: time.Minute, KeepAlive: KeepAliveFixed}},
		{"negative durations take the defaults",
			api.FunctionSpec{Scaling: api.ScalingPolicy{StableWindow: api.Seconds(-10), ScaleToZeroGrace: api.Seconds(-1)}}, 0,
			Policy{Targets: []Target{{Metric: MetricConcurrency}}, KeepAlive: KeepAliveAdaptive}},
	} {
		if diff := cmp.Diff(c.want, policyFor(&c.spec, c.clusterMax)); diff != "" {
			t.Errorf("%s: policyFor (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestScalerActivateAsksForTheDemand(t *testing.T) {
	scaling := func(p api.ScalingPolicy) api.FunctionSpec { return api.FunctionSpec{Scaling: p} }
	cases := []struct {
		name   string
		spec   api.FunctionSpec
		demand int
		want   int32
	}{
		{"one request, no limit", api.FunctionSpec{}, 1, 1},
		{"no demand counts as one", api.FunctionSpec{}, 0, 1},
		{"500, no limit: 100 per replica", api.FunctionSpec{}, 500, 5},
		{"501, no limit: rounded up", api.FunctionSpec{}, 501, 6},
		{"5000, no limit", api.FunctionSpec{}, 5000, 50},
		{"5000 capped by maxScale", scaling(api.ScalingPolicy{MaxScale: 10}), 5000, 10},
		{"500 at concurrency 10: 70% of it per replica", api.FunctionSpec{Concurrency: 10}, 500, 72},
		{"a target of its own", scaling(api.ScalingPolicy{Target: 50}), 500, 10},
		{"at least minScale", scaling(api.ScalingPolicy{MinScale: 3}), 1, 3},
		{"rps metric: one replica's capacity", scaling(api.ScalingPolicy{Metric: api.MetricRPS}), 500, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := revision(1, at(-3600), c.spec)
			got, err := newScaler(t).Activate(at(0), &r, c.demand)
			if err != nil || got != c.want {
				t.Errorf("Activate(demand %d) = %d, %v; want %d", c.demand, got, err, c.want)
			}
		})
	}

	// Within the hold the largest demand counts, for the ask and for the
	// decisions, which never ask for fewer replicas than it needs, though
	// the Decider's windows average it down; after it, a new one starts
	// afresh.
	r := revision(1, at(-3600), api.FunctionSpec{Concurrency: 10})
	s := newScaler(t)
	in := Input{Scales: []api.Scale{scaleOf(r, 0)}, Revisions: []api.Revision{r}}
	for sec := -60; sec < 0; sec++ {
		if _, err := s.Decide(at(sec), in); err != nil {
			t.Fatal(err)
		}
	}
	hold := DefaultScalerConfig().ActivationHold
	if got, _ := s.Activate(at(0), &r, 500); got != 72 {
		t.Fatalf("ask for 500: %d replicas, want 72", got)
	}
	if got, _ := s.Activate(at(1), &r, 10); got != 72 {
		t.Errorf("a smaller demand within the hold asked for %d replicas, want the 500's 72", got)
	}
	for sec := 1; sec < 3; sec++ {
		res, err := s.Decide(at(sec), in)
		if err != nil {
			t.Fatal(err)
		}
		d := res.Revisions[0]
		if d.Load.Sample.Concurrency != 500 || d.Desired < 72 {
			t.Errorf("t=%d: the decision counted %v in flight and asked for %d replicas (%v); want the activation's 500 and at least 72",
				sec, d.Load.Sample.Concurrency, d.Desired, d.Reason)
		}
	}
	if got, _ := s.Activate(at(1).Add(hold), &r, 10); got != 2 {
		t.Errorf("after the hold, an ask for 10 asked for %d replicas, want 2", got)
	}
}
