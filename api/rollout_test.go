package api_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func trafficOf(targets ...api.TrafficTarget) *api.Traffic {
	return &api.Traffic{Metadata: api.ObjectMeta{Name: "hello", Namespace: "default"}, Spec: api.TrafficSpec{Targets: targets}}
}

func TestMainTarget(t *testing.T) {
	for _, tt := range []struct {
		name string
		t    *api.Traffic
		want string
	}{
		{"none", nil, ""},
		{"all", trafficOf(api.TrafficTarget{Revision: "hello-00001", Percent: 100}), "hello-00001"},
		{"largest", trafficOf(api.TrafficTarget{Revision: "hello-00002", Percent: 10}, api.TrafficTarget{Revision: "hello-00001", Percent: 90}), "hello-00001"},
		{"newest of equals", trafficOf(api.TrafficTarget{Revision: "hello-00002", Percent: 50}, api.TrafficTarget{Revision: "hello-00001", Percent: 50}), "hello-00002"},
		{"tag only", trafficOf(api.TrafficTarget{Revision: "hello-00003", Tag: "next"}, api.TrafficTarget{Revision: "hello-00001", Percent: 100}), "hello-00001"},
	} {
		if got := api.MainTarget(tt.t); got != tt.want {
			t.Errorf("%s: MainTarget = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestSplitKeepsTags(t *testing.T) {
	cur := trafficOf(
		api.TrafficTarget{Revision: "hello-00001", Percent: 100, Tag: "stable"},
		api.TrafficTarget{Revision: "hello-00003", Tag: "next"},
	)
	got := api.Split(cur, map[string]int32{"hello-00002": 10, "hello-00001": 90})
	want := []api.TrafficTarget{
		{Revision: "hello-00001", Percent: 90, Tag: "stable"},
		{Revision: "hello-00002", Percent: 10},
		{Revision: "hello-00003", Tag: "next"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Split (-want +got):\n%s", diff)
	}
	if !api.SameShares(trafficOf(want...), map[string]int32{"hello-00001": 90, "hello-00002": 10, "hello-00009": 0}) {
		t.Errorf("SameShares: tags and 0%% shares should not count")
	}
	if api.SameShares(trafficOf(want...), map[string]int32{"hello-00001": 100}) {
		t.Errorf("SameShares: a different split compared equal")
	}
	if err := api.ValidateTraffic(trafficOf(want...)); err != nil {
		t.Errorf("Split made an invalid traffic: %v", err)
	}
}

func TestRolloutShares(t *testing.T) {
	ro := func(phase api.RolloutPhase, pct int32) *api.Rollout {
		return &api.Rollout{Spec: api.RolloutSpec{Revision: "hello-00002", From: "hello-00001"}, Status: api.RolloutStatus{Phase: phase, Percent: pct}}
	}
	for _, tt := range []struct {
		ro   *api.Rollout
		want map[string]int32
	}{
		{ro(api.RolloutProgressing, 10), map[string]int32{"hello-00002": 10, "hello-00001": 90}},
		{ro(api.RolloutProgressing, 100), map[string]int32{"hello-00002": 100}},
		{ro(api.RolloutSucceeded, 100), map[string]int32{"hello-00002": 100}},
		{ro(api.RolloutRolledBack, 10), map[string]int32{"hello-00001": 100}},
		{ro(api.RolloutAborted, 10), nil},
	} {
		if diff := cmp.Diff(tt.want, tt.ro.Shares()); diff != "" {
			t.Errorf("%s at %d%%: Shares (-want +got):\n%s", tt.ro.Status.Phase, tt.ro.Status.Percent, diff)
		}
	}
}

func TestKeepsRevisionAndPrunable(t *testing.T) {
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "hello"},
		Status: api.FunctionStatus{LatestRevision: "hello-00008", LatestReadyRevision: "hello-00007"}}
	tr := trafficOf(api.TrafficTarget{Revision: "hello-00007", Percent: 100}, api.TrafficTarget{Revision: "hello-00002", Tag: "old"})
	ro := &api.Rollout{Spec: api.RolloutSpec{Revision: "hello-00007", From: "hello-00005"}, Status: api.RolloutStatus{Phase: api.RolloutSucceeded}}
	var revs []string
	for i := 1; i <= 8; i++ {
		revs = append(revs, api.RevisionName("hello", int64(i)))
	}
	kept := map[string]bool{}
	for _, r := range revs {
		if why := api.KeepsRevision(fn, tr, ro, r); why != "" {
			kept[r] = true
		}
	}
	wantKept := map[string]bool{"hello-00002": true, "hello-00005": true, "hello-00007": true, "hello-00008": true}
	if diff := cmp.Diff(wantKept, kept); diff != "" {
		t.Errorf("kept revisions (-want +got):\n%s", diff)
	}
	// Free: 1, 3, 4, 6. Keeping 2 of them deletes the oldest two.
	if diff := cmp.Diff([]string{"hello-00001", "hello-00003"}, api.Prunable(fn, tr, ro, revs, 2)); diff != "" {
		t.Errorf("Prunable keep 2 (-want +got):\n%s", diff)
	}
	if got := api.Prunable(fn, tr, ro, revs, 4); got != nil {
		t.Errorf("Prunable keep 4 = %v, want nothing", got)
	}
	if diff := cmp.Diff([]string{"hello-00001", "hello-00003", "hello-00004", "hello-00006"}, api.Prunable(fn, tr, ro, revs, 0)); diff != "" {
		t.Errorf("Prunable keep 0 (-want +got):\n%s", diff)
	}
}
