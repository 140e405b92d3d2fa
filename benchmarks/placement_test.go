package benchmarks

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/surgeplatform/surge/controlplane/scheduler"
)

// TestPlacementAgreesWithTheNaiveScheduler: B5's fast and naive pickers
// make the same decisions on the simulated cluster (up to ties that only
// float rounding breaks), so the benchmark compares like with like.
func TestPlacementAgreesWithTheNaiveScheduler(t *testing.T) {
	sim := newPlacementSim(rand.New(rand.NewPCG(1, 2)))
	naive := sim.naiveNodes()
	byName := map[string]*naiveNode{}
	for i := range naive {
		byName[naive[i].Name] = &naive[i]
	}
	// score is what the naive scheduler ranks a node by, for near-ties.
	score := func(n *naiveNode, req scheduler.Request) (int, float64) {
		s := 50*float64(n.MilliCPU-n.UsedMilliCPU-req.MilliCPU)/float64(n.MilliCPU) +
			50*float64(n.MemoryBytes-n.UsedMemory-req.MemoryBytes)/float64(n.MemoryBytes)
		if n.images[req.Image] {
			s += scheduler.ImageScore
		}
		return n.FunctionCount[req.Function], s
	}
	for i := range 300 {
		req := scheduler.RequestOf(&sim.revisions[sim.rnd.IntN(len(sim.revisions))])
		fast, err1 := sim.cluster.Pick(req)
		slow, err2 := naivePick(naive, req)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("decision %d: fast %q, %v; naive %q, %v", i, fast, err1, slow, err2)
		}
		if fast == slow {
			continue
		}
		fs, fscore := score(byName[fast], req)
		ss, sscore := score(byName[slow], req)
		if fs != ss || math.Abs(fscore-sscore) > 1e-9 {
			t.Errorf("decision %d: fast %s (spread %d, score %v), naive %s (spread %d, score %v)", i, fast, fs, fscore, slow, ss, sscore)
		}
	}
}
