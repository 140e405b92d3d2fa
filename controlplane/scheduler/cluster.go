package scheduler

import (
	"maps"

	"github.com/surgeplatform/surge/api"
)

// Cluster is the scheduler's accounting of one read of the state: every
// node with what its bound replicas reserve. It is built from the API
// objects, answers Pick, and takes each new binding with Bind, so that the
// replicas placed in one pass see each other. It does no I/O; the caller
// reads the objects and writes the bindings.
type Cluster struct {
	nodes []Node
	index map[string]int // node name → position in nodes
	// revisions holds the revisions by key, for the requests of their
	// replicas.
	revisions map[api.Key]*api.Revision
}

// NewCluster accounts for nodes and the replicas bound to them. A replica
// reserves what its revision's template asks for; a replica whose revision
// is gone, or that is bound to a node not in nodes, reserves nothing.
func NewCluster(nodes []api.Node, replicas []api.Replica, revisions []api.Revision) *Cluster {
	c := &Cluster{
		nodes:     make([]Node, 0, len(nodes)),
		index:     make(map[string]int, len(nodes)),
		revisions: make(map[api.Key]*api.Revision, len(revisions)),
	}
	for i := range revisions {
		r := &revisions[i]
		c.revisions[api.KeyOf(r)] = r
	}
	for _, n := range nodes {
		c.index[n.Metadata.Name] = len(c.nodes)
		c.nodes = append(c.nodes, nodeOf(&n))
	}
	for i := range replicas {
		r := &replicas[i]
		if r.Spec.NodeName == "" {
			continue
		}
		if req, ok := c.Request(r); ok {
			c.Bind(r.Spec.NodeName, req)
		}
	}
	return c
}

// nodeOf is what the scheduler knows of n before any replica is counted:
// it takes replicas when it is alive, not cordoned and has its pod subnet.
// An allocatable quantity that does not parse counts as none.
func nodeOf(n *api.Node) Node {
	cpu, _ := api.ParseCPU(n.Status.Allocatable.CPU)
	mem, _ := api.ParseMemory(n.Status.Allocatable.Memory)
	return Node{
		Name:          n.Metadata.Name,
		Schedulable:   !n.Spec.Unschedulable && n.Status.State == api.NodeAlive && n.Spec.PodSubnet != "",
		MilliCPU:      cpu,
		MemoryBytes:   mem,
		FunctionCount: map[api.Key]int{},
	}
}

// RequestOf is what a replica of rev reserves on its node. A resource
// quantity that does not parse asks for none (validation rejects such a
// function before it is stored).
func RequestOf(rev *api.Revision) Request {
	s := rev.Spec.Template
	cpu, _ := api.ParseCPU(s.Resources.CPU)
	mem, _ := api.ParseMemory(s.Resources.Memory)
	fn := api.Key{Namespace: rev.Metadata.Namespace, Name: rev.Spec.Function}
	return Request{Function: fn, MilliCPU: cpu, MemoryBytes: mem}
}

// Request is what replica r reserves, from its revision; ok is false when
// the revision is gone, and such a replica is not to be placed (the
// replica controller removes it).
func (c *Cluster) Request(r *api.Replica) (req Request, ok bool) {
	rev := c.revisions[api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision}]
	if rev == nil {
		return Request{}, false
	}
	return RequestOf(rev), true
}

// Pick returns the node a replica asking req should run on, as Pick does
// over the accounted nodes. It changes nothing: call Bind once the binding
// is written.
func (c *Cluster) Pick(req Request) (string, error) { return Pick(c.nodes, req) }

// Bind records that a replica asking req now runs on node. A node not in
// the cluster is ignored.
func (c *Cluster) Bind(node string, req Request) {
	i, ok := c.index[node]
	if !ok {
		return
	}
	n := &c.nodes[i]
	n.UsedMilliCPU += req.MilliCPU
	n.UsedMemory += req.MemoryBytes
	n.FunctionCount[req.Function]++
}

// Nodes returns a copy of the accounting, node by node in the order given
// to NewCluster.
func (c *Cluster) Nodes() []Node {
	out := make([]Node, len(c.nodes))
	for i, n := range c.nodes {
		n.FunctionCount = maps.Clone(c.nodes[i].FunctionCount)
		out[i] = n
	}
	return out
}
