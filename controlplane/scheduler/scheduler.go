// Package scheduler decides which node runs a replica, with no I/O: a
// Cluster holds what the scheduler knows of the nodes and of what the
// replicas bound to them reserve, kept current one object at a time (the
// controllers' watch feeds it), and Pick answers from it in memory. The
// controller shell around it (package controllers) writes the bindings.
//
// Like kube-scheduler it filters, then scores
// (https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/).
// A node passes the filters when it is alive, neither cordoned nor
// draining, has a pod subnet, has the cpu and memory the replica asks for
// left over, and carries every label of the function's node selector.
// Among those, it prefers, in order:
//
//  1. the fewest replicas of the same function (anti-affinity by default:
//     a function's replicas go to different nodes while any fit, so that
//     one node's loss takes a fraction of it);
//  2. the highest score: the share of the node's cpu and memory left free
//     once the replica is placed (least allocated, 0 to 100, so that load
//     evens out), plus ImageScore when the node has the replica's image
//     already (its start skips the pull);
//  3. the name, so that the decision is reproducible.
//
// A Pick looks at every node: with 5,000 nodes it takes a few tens of
// microseconds (benchmark B5: about 20,000 a second on one core), so
// there is no need to sample nodes as kube-scheduler does past a few
// hundred. What makes it cheap is that a node's test is arithmetic on a
// flat array; the few nodes that run the function, have its image or
// match its node selector are marked beforehand from per-function,
// per-image and per-label indexes, not looked up node by node.
package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/surgeplatform/surge/api"
)

// ImageScore is what having a replica's image adds to a node's score, on
// the scale where a node's free share of cpu and memory counts 0 to 100:
// a node with the image wins over one with up to 20 points more free
// resources, as a pull costs seconds and a slightly fuller node costs
// little.
const ImageScore = 20

// Node is what the scheduler knows of one node, as Nodes reports it.
type Node struct {
	Name        string
	Schedulable bool
	MilliCPU    int64 // allocatable
	MemoryBytes int64 // allocatable
	// UsedMilliCPU and UsedMemory are what the replicas bound to it reserve.
	UsedMilliCPU int64
	UsedMemory   int64
	// FunctionCount is the number of replicas per function.
	FunctionCount map[api.Key]int
	Labels        map[string]string
	Images        []string
}

// Request is what one replica asks for.
type Request struct {
	// Function names the replica's function, for spreading.
	Function    api.Key
	MilliCPU    int64
	MemoryBytes int64
	// Image is the digest of the replica's image ("" when not pinned),
	// for the image score.
	Image string
	// Selector is the function's node selector: every pair must be among
	// a node's labels. Shared with the revision: not to be modified.
	Selector map[string]string
}

// ErrNoNode means no node can take the replica now; the error's text says
// why each node was passed over, for the replica's status message.
var ErrNoNode = errors.New("no node fits")

// Pick returns the node a replica asking req should run on. It changes
// nothing: call Assume once the binding is decided.
func (c *Cluster) Pick(req Request) (string, error) {
	i, ok := c.pick(req)
	if !ok {
		return "", c.noNode(req)
	}
	return c.nodes[i].info.name, nil
}

// pick is Pick's search; ok is false when no node passes the filters.
func (c *Cluster) pick(req Request) (best int32, ok bool) {
	c.epoch++
	epoch := c.epoch
	counts := c.functions[req.Function]
	for i := range counts {
		c.nodes[i].fnMark = epoch
	}
	if req.Image != "" {
		for i := range c.images[req.Image] {
			c.nodes[i].imageMark = epoch
		}
	}
	selector := len(req.Selector) > 0
	if selector {
		c.markSelected(req.Selector, epoch)
	}
	// Nodes without a replica of the function come first (anti-affinity):
	// one pass over all nodes skips the marked ones.
	best, bestScore := int32(-1), 0.0
	for i := range c.nodes {
		n := &c.nodes[i]
		if !n.schedulable || n.fnMark == epoch || n.freeCPU < req.MilliCPU || n.freeMemory < req.MemoryBytes ||
			(selector && n.selectorMark != epoch) {
			continue
		}
		s := n.score(&req, epoch)
		if best < 0 || s > bestScore || (s == bestScore && n.info.name < c.nodes[best].info.name) {
			best, bestScore = int32(i), s
		}
	}
	if best >= 0 {
		return best, true
	}
	// Every node that fits runs the function already: the fewest of its
	// replicas, then the score.
	bestCount := 0
	for i, cnt := range counts {
		n := &c.nodes[i]
		if !n.fits(&req) {
			continue
		}
		s := n.score(&req, epoch)
		if best < 0 || cnt < bestCount || (cnt == bestCount && (s > bestScore || (s == bestScore && n.info.name < c.nodes[best].info.name))) {
			best, bestScore, bestCount = i, s, cnt
		}
	}
	return best, best >= 0
}

// markSelected marks the nodes that match a node selector: those of the
// selector's rarest label that have the others too.
func (c *Cluster) markSelected(sel map[string]string, epoch uint64) {
	var fewest map[int32]struct{}
	first := true
	for k, v := range sel {
		set := c.labels[k+"="+v]
		if first || len(set) < len(fewest) {
			fewest, first = set, false
		}
	}
	for i := range fewest {
		if n := &c.nodes[i]; len(sel) == 1 || n.info.matches(sel) {
			n.selectorMark = epoch
		}
	}
}

// fits is the filters.
func (n *node) fits(req *Request) bool {
	return n.schedulable && n.freeCPU >= req.MilliCPU && n.freeMemory >= req.MemoryBytes && n.info.matches(req.Selector)
}

// score is the node's free share of cpu and memory once req is placed,
// 0 to 100, plus ImageScore when it has the image.
func (n *node) score(req *Request, epoch uint64) float64 {
	s := float64(n.freeCPU-req.MilliCPU)*n.cpuWeight + float64(n.freeMemory-req.MemoryBytes)*n.memoryWeight
	if n.imageMark == epoch && req.Image != "" {
		s += ImageScore
	}
	return s
}

// noNode explains why no node takes req: how many nodes each filter
// turned away, in a stable order.
func (c *Cluster) noNode(req Request) error {
	if c.live == 0 {
		return fmt.Errorf("%w: no nodes have joined", ErrNoNode)
	}
	reasons := map[string]int{}
	for i := range c.nodes {
		n := &c.nodes[i]
		switch {
		case !n.present:
		case !n.schedulable:
			reasons["not schedulable"]++
		case !n.info.matches(req.Selector):
			reasons["not matching the node selector"]++
		case n.freeCPU < req.MilliCPU:
			reasons["not enough cpu"]++
		case n.freeMemory < req.MemoryBytes:
			reasons["not enough memory"]++
		}
	}
	parts := make([]string, 0, len(reasons))
	for r, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	slices.Sort(parts)
	return fmt.Errorf("%w: %d nodes: %s", ErrNoNode, c.live, strings.Join(parts, ", "))
}

func (n *nodeInfo) matches(sel map[string]string) bool {
	for k, v := range sel {
		if lv, ok := n.labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// Nodes returns a copy of what the cluster knows of its nodes, sorted by
// name.
func (c *Cluster) Nodes() []Node {
	out := make([]Node, 0, c.live)
	for i := range c.nodes {
		n := &c.nodes[i]
		if !n.present {
			continue
		}
		fc := map[api.Key]int{}
		for fn, counts := range c.functions {
			if cnt := counts[int32(i)]; cnt > 0 {
				fc[fn] = cnt
			}
		}
		var images []string
		for d, set := range c.images {
			if _, ok := set[int32(i)]; ok {
				images = append(images, d)
			}
		}
		slices.Sort(images)
		info := n.info
		out = append(out, Node{
			Name: info.name, Schedulable: n.schedulable, MilliCPU: info.milliCPU, MemoryBytes: info.memory,
			UsedMilliCPU: info.milliCPU - n.freeCPU, UsedMemory: info.memory - n.freeMemory, FunctionCount: fc,
			Labels: maps.Clone(info.labels), Images: images,
		})
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}
