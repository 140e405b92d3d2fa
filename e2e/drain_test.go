//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
)

// TestDrainUnderLoad is R10 and the cordon it starts from, on a cluster of
// one server, three agents and two gateways: a function's three replicas
// go to three nodes (anti-affinity); a cordoned node gets no new replica;
// `surge drain` moves a node's replica under load, the replacement Ready
// before the old one stops, and no request fails.
func TestDrainUnderLoad(t *testing.T) {
	c := startCluster(t)
	image := strings.TrimSpace(c.MustSurge("build", "../examples/hello", "-t", "hello:v1"))
	s := &scenarios{c: c, image: image}
	t.Run("anti-affinity and cordon", s.cordon)
	t.Run("R10", s.r10DrainUnderLoad)
}

// cordon: three replicas spread over the three nodes; with a2 cordoned
// another function's two replicas go to the other two, and a2 keeps what
// it runs.
func (s *scenarios) cordon(t *testing.T) {
	reps := s.deploy(t, "spread", 3)
	if nodes := slices.Compact(nodesOf(reps)); len(nodes) != 3 {
		t.Fatalf("3 replicas on %v, want three nodes", nodesOf(reps))
	}
	s.c.MustSurge("cordon", "a2")
	t.Cleanup(func() { s.c.Surge("uncordon", "a2") })
	out := s.c.MustSurge("nodes", "a2")
	if !strings.Contains(out, "alive,cordoned") {
		t.Errorf("surge nodes a2 after cordon:\n%s", out)
	}
	other := s.deploy(t, "spread2", 2)
	if got := nodesOf(other); !slices.Equal(got, []string{"a1", "a3"}) {
		t.Errorf("with a2 cordoned, a new function's replicas on %v, want a1 and a3", got)
	}
	if got := nodesOf(s.ready("spread")); !slices.Equal(got, []string{"a1", "a2", "a3"}) {
		t.Errorf("with a2 cordoned, the first function's replicas on %v, want them where they were", got)
	}
	s.c.MustSurge("uncordon", "a2")
}

// R10: drain a node (two replicas of six) while a load of 8 clients
// runs: every replica it ran is Ready elsewhere before it stops, and no
// request fails.
func (s *scenarios) r10DrainUnderLoad(t *testing.T) {
	const n = 6
	reps := s.deploy(t, "r10", n)
	victim := "a3" // no gateway there: the load goes on through a1 and a2
	var before []string
	for _, r := range reps {
		if r.Spec.NodeName == victim {
			before = append(before, r.Metadata.Name)
		}
	}
	if len(before) == 0 {
		t.Fatalf("no replica of r10 on %s: %v", victim, nodesOf(reps))
	}
	t.Cleanup(func() { s.c.Surge("uncordon", victim) })
	l := s.load("r10", 8, time.Hour)
	defer l.Stop()
	time.Sleep(3 * time.Second) // the load runs before the drain
	start := time.Now()
	out := s.c.MustSurge("drain", victim, "--timeout", "2m")
	took := time.Since(start)
	time.Sleep(3 * time.Second) // and after it
	res := l.Stop()
	after := s.ready("r10")
	onVictim := 0
	for _, r := range after {
		if r.Spec.NodeName == victim {
			onVictim++
		}
	}
	report(t, "R10 drain a node under load: %d of %d replicas moved off %s in %s, %d Ready after (want %d, none on it), %d requests, %d failed (goal 0)",
		len(before), n, victim, took.Round(time.Millisecond), len(after), n, len(res), len(res.Failed()))
	if !strings.Contains(out, fmt.Sprintf("node %q drained", victim)) {
		t.Errorf("surge drain said:\n%s", out)
	}
	if len(after) != n || onVictim != 0 {
		t.Errorf("R10: after the drain %v, want %d Ready replicas, none on %s", nodesOf(after), n, victim)
	}
	if f := res.Failed(); len(f) > 0 {
		t.Errorf("R10: %d requests failed: %s", len(f), res.Errors())
	}
}

// nodesOf lists the nodes of replicas, sorted, one entry per replica.
func nodesOf(reps []api.Replica) []string {
	var out []string
	for _, r := range reps {
		out = append(out, r.Spec.NodeName)
	}
	slices.Sort(out)
	return out
}
