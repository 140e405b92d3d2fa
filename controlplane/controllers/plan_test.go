package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func rep(name, node string, phase api.ReplicaPhase, ageSec int) api.Replica {
	return api.Replica{
		Metadata: api.ObjectMeta{Name: name, CreationTimestamp: time.Unix(1000-int64(ageSec), 0)},
		Spec:     api.ReplicaSpec{NodeName: node},
		Status:   api.ReplicaStatus{Phase: phase},
	}
}

func TestPlanReplicas(t *testing.T) {
	for _, tc := range []struct {
		name     string
		desired  int32
		replicas []api.Replica
		want     replicaPlan
	}{
		{"from zero", 2, nil, replicaPlan{create: 2}},
		{"steady", 1, []api.Replica{rep("a", "n", api.ReplicaReady, 10)}, replicaPlan{}},
		{"failed is replaced", 1, []api.Replica{rep("a", "n", api.ReplicaFailed, 10)}, replicaPlan{create: 1, remove: []string{"a"}}},
		{"terminating does not count", 1, []api.Replica{rep("a", "n", api.ReplicaTerminating, 10)}, replicaPlan{create: 1}},
		{"scale down prefers unbound, then unready, then youngest", 1, []api.Replica{
			rep("old", "n", api.ReplicaReady, 100),
			rep("young", "n", api.ReplicaReady, 5),
			rep("starting", "n", api.ReplicaStarting, 50),
			rep("unbound", "", api.ReplicaPending, 60),
		}, replicaPlan{remove: []string{"starting", "unbound", "young"}}},
		{"to zero", 0, []api.Replica{rep("a", "n", api.ReplicaReady, 10)}, replicaPlan{remove: []string{"a"}}},
		// A drain, step by step: replacements first, the old replicas
		// once the new ones are Ready.
		{"drain: replacements are made", 2, []api.Replica{
			rep("a", "draining", api.ReplicaReady, 10), rep("b", "draining", api.ReplicaReady, 10),
		}, replicaPlan{create: 2}},
		{"drain: the old stay while the new start", 2, []api.Replica{
			rep("a", "draining", api.ReplicaReady, 10), rep("b", "draining", api.ReplicaReady, 10),
			rep("c", "n", api.ReplicaStarting, 1), rep("d", "", api.ReplicaPending, 1),
		}, replicaPlan{}},
		{"drain: one old goes for each new one Ready", 2, []api.Replica{
			rep("a", "draining", api.ReplicaReady, 10), rep("b", "draining", api.ReplicaReady, 10),
			rep("c", "n", api.ReplicaReady, 1), rep("d", "n", api.ReplicaStarting, 1),
		}, replicaPlan{remove: []string{"b"}}},
		{"drain: done", 2, []api.Replica{
			rep("a", "draining", api.ReplicaReady, 10),
			rep("c", "n", api.ReplicaReady, 1), rep("d", "n", api.ReplicaReady, 1),
		}, replicaPlan{remove: []string{"a"}}},
		{"drain: an old replica that is not Ready goes at once", 1, []api.Replica{
			rep("a", "draining", api.ReplicaStarting, 10),
		}, replicaPlan{create: 1, remove: []string{"a"}}},
		{"drain while scaling down", 1, []api.Replica{
			rep("a", "draining", api.ReplicaReady, 10),
			rep("c", "n", api.ReplicaReady, 1), rep("d", "n", api.ReplicaReady, 2),
		}, replicaPlan{remove: []string{"a", "c"}}},
		{"drain to zero", 0, []api.Replica{rep("a", "draining", api.ReplicaReady, 10)}, replicaPlan{remove: []string{"a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reps := map[api.Key]*api.Replica{}
			for i := range tc.replicas {
				reps[api.Key{Name: tc.replicas[i].Metadata.Name}] = &tc.replicas[i]
			}
			got := planReplicas(tc.desired, reps, func(node string) bool { return node == "draining" })
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(replicaPlan{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodeVerdict(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const confirm, timeout = 3 * time.Second, 30 * time.Second
	for _, tc := range []struct {
		name        string
		lastSeen    time.Time
		gossipDead  bool
		now         time.Time
		wantDead    bool
		wantRecheck time.Time
	}{
		{"never beat", time.Time{}, true, t0.Add(time.Hour), false, time.Time{}},
		{"beating, gossip alive", t0, false, t0.Add(time.Second), false, t0.Add(timeout)},
		{"beating, gossip dead: not yet", t0, true, t0.Add(2 * time.Second), false, t0.Add(confirm)},
		{"beating, gossip dead: exactly confirm", t0, true, t0.Add(confirm), false, t0.Add(confirm)},
		{"gossip dead, beats missed", t0, true, t0.Add(confirm + time.Millisecond), true, time.Time{}},
		{"gossip alive, beats missed past confirm", t0, false, t0.Add(10 * time.Second), false, t0.Add(timeout)},
		{"gossip alive, beats missed past timeout", t0, false, t0.Add(timeout + time.Second), true, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dead, recheck := nodeVerdict(tc.lastSeen, tc.gossipDead, tc.now, confirm, timeout)
			if dead != tc.wantDead || !recheck.Equal(tc.wantRecheck) {
				t.Errorf("nodeVerdict = %v, %v; want %v, %v", dead, recheck, tc.wantDead, tc.wantRecheck)
			}
		})
	}
}
