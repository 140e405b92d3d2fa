// Package scheduler decides which node runs a replica. It keeps the
// accounting of what the replicas bound to each node reserve (Cluster,
// built from the API objects) and picks a node for each new replica (Pick),
// with no I/O: the controller shell around it (package controllers) reads
// the state and writes the bindings.
//
// Like kube-scheduler it filters, then scores: a node must be alive, not
// cordoned, and have the cpu and memory the replica asks for left over;
// among those it prefers the node with the fewest replicas of the same
// function (spread, so one node's loss takes a fraction of a function), then
// the most free resources (so load evens out), then the name (so the
// decision is reproducible).
package scheduler

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/surgeplatform/surge/api"
)

// Node is what the scheduler knows of one node.
type Node struct {
	Name          string
	Schedulable   bool
	MilliCPU      int64 // allocatable
	MemoryBytes   int64 // allocatable
	UsedMilliCPU  int64 // reserved by the replicas bound to it
	UsedMemory    int64
	FunctionCount map[api.Key]int // replicas per function
}

// Request is what one replica asks for.
type Request struct {
	// Function names the replica's function, for spreading.
	Function    api.Key
	MilliCPU    int64
	MemoryBytes int64
}

// ErrNoNode means no node can take the replica now; the reasons say why
// each was passed over, for the replica's status message.
var ErrNoNode = errors.New("no node fits")

// Pick returns the node a replica should run on.
func Pick(nodes []Node, req Request) (string, error) {
	type cand struct {
		n      *Node
		spread int
		free   float64
	}
	var cands []cand
	reasons := map[string]int{}
	for i := range nodes {
		n := &nodes[i]
		switch {
		case !n.Schedulable:
			reasons["not schedulable"]++
		case n.MilliCPU-n.UsedMilliCPU < req.MilliCPU:
			reasons["not enough cpu"]++
		case n.MemoryBytes-n.UsedMemory < req.MemoryBytes:
			reasons["not enough memory"]++
		default:
			free := 0.0
			if n.MilliCPU > 0 && n.MemoryBytes > 0 {
				free = float64(n.MilliCPU-n.UsedMilliCPU-req.MilliCPU)/float64(n.MilliCPU) +
					float64(n.MemoryBytes-n.UsedMemory-req.MemoryBytes)/float64(n.MemoryBytes)
			}
			cands = append(cands, cand{n: n, spread: n.FunctionCount[req.Function], free: free})
		}
	}
	if len(cands) == 0 {
		if len(nodes) == 0 {
			return "", fmt.Errorf("%w: no nodes have joined", ErrNoNode)
		}
		parts := make([]string, 0, len(reasons))
		for r, c := range reasons {
			parts = append(parts, fmt.Sprintf("%d %s", c, r))
		}
		sort.Strings(parts)
		return "", fmt.Errorf("%w: %d nodes: %s", ErrNoNode, len(nodes), strings.Join(parts, ", "))
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.spread != b.spread {
			return a.spread < b.spread
		}
		if a.free != b.free {
			return a.free > b.free
		}
		return a.n.Name < b.n.Name
	})
	return cands[0].n.Name, nil
}
