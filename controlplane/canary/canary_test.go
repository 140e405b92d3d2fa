package canary_test

import (
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/canary"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// rollout is a canary of hello-00002 from hello-00001 at step step of
// 10,50,100 every 30s, begun at t0.
func rollout(step int32) *api.Rollout {
	steps := []int32{10, 50, 100}
	return &api.Rollout{
		Spec: api.RolloutSpec{Revision: "hello-00002", From: "hello-00001",
			Canary: &api.CanaryStrategy{Steps: steps, StepDuration: api.Duration{Duration: 30 * time.Second}}},
		Status: api.RolloutStatus{Phase: api.RolloutProgressing, Step: step, Percent: steps[step], StepStarted: t0},
	}
}

// seen is n requests, errs of them errors, each taking d.
func seen(n, errs int64, d time.Duration) api.Outcomes {
	o := api.Outcomes{Requests: n, Errors: errs, Latency: make([]int64, api.LatencyBuckets)}
	o.Latency[api.LatencyBucket(d)] = n
	return o
}

func TestDecide(t *testing.T) {
	fast, slow := 5*time.Millisecond, 400*time.Millisecond
	for _, tt := range []struct {
		name             string
		ro               *api.Rollout
		at               time.Duration // after t0
		canary, baseline api.Outcomes
		want             canary.Action
		step, percent    int32
		reason           string // a part of the reason; "" wants none
	}{
		{"healthy, step goes on", rollout(0), 10 * time.Second, seen(50, 0, fast), seen(450, 0, fast), canary.Wait, 0, 0, ""},
		{"healthy, step ends", rollout(0), 30 * time.Second, seen(50, 0, fast), seen(450, 0, fast), canary.Advance, 1, 50, ""},
		{"last step", rollout(1), 31 * time.Second, seen(250, 1, fast), seen(250, 1, fast), canary.Advance, 2, 100, ""},
		{"errors roll back at once", rollout(0), time.Second, seen(20, 20, fast), seen(180, 0, fast), canary.RollBack, 0, 0, "error rate 100.0% against 0.0%"},
		{"errors below the margin", rollout(0), 30 * time.Second, seen(100, 4, fast), seen(900, 0, fast), canary.Advance, 1, 50, ""},
		{"errors as bad as the baseline's", rollout(0), 30 * time.Second, seen(100, 30, fast), seen(900, 270, fast), canary.Advance, 1, 50, ""},
		{"too few requests to judge errors early", rollout(0), time.Second, seen(5, 5, fast), seen(45, 0, fast), canary.Wait, 0, 0, ""},
		{"few errors judged at the step's end", rollout(0), 30 * time.Second, seen(5, 5, fast), seen(45, 0, fast), canary.RollBack, 0, 0, "error rate"},
		{"slower rolls back at the step's end", rollout(0), 30 * time.Second, seen(50, 0, slow), seen(450, 0, fast), canary.RollBack, 0, 0, "p99 latency"},
		{"slower waits for the step's end", rollout(0), 10 * time.Second, seen(50, 0, slow), seen(450, 0, fast), canary.Wait, 0, 0, ""},
		{"slower but by little", rollout(0), 30 * time.Second, seen(50, 0, 3*time.Millisecond), seen(450, 0, time.Millisecond), canary.Advance, 1, 50, ""},
		{"no traffic: advance unjudged", rollout(0), 30 * time.Second, api.Outcomes{}, api.Outcomes{}, canary.Advance, 1, 50, "not judged"},
		{"slow with too few baseline requests", rollout(0), 30 * time.Second, seen(50, 0, slow), seen(3, 0, fast), canary.Advance, 1, 50, "not judged"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(tt.at)
			d := canary.Decide(now, tt.ro, canary.Evidence{Since: t0, Canary: tt.canary, Baseline: tt.baseline})
			if d.Action != tt.want {
				t.Fatalf("action %s (%s), want %s", d.Action, d.Reason, tt.want)
			}
			if tt.want == canary.Advance && (d.Step != tt.step || d.Percent != tt.percent) {
				t.Errorf("advance to step %d at %d%%, want step %d at %d%%", d.Step, d.Percent, tt.step, tt.percent)
			}
			if tt.want == canary.Wait && !d.Next.Equal(t0.Add(30*time.Second)) {
				t.Errorf("look again at %v, want the step's end", d.Next)
			}
			if (tt.reason == "") != (d.Reason == "") || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q, want one with %q", d.Reason, tt.reason)
			}
			if a := d.Analysis; a.Canary.Requests != tt.canary.Requests || a.Baseline.Requests != tt.baseline.Requests || !a.At.Equal(now) {
				t.Errorf("analysis %+v does not show the evidence", a)
			}
		})
	}
}
