package scheduler

import (
	"maps"

	"github.com/surgeplatform/surge/api"
)

// Cluster is the scheduler's accounting: every node, with what the
// replicas bound to it reserve. It is kept current one change at a time
// (SetNode, SetReplica, SetRevision and their removals, from a watch), so
// that a placement reads nothing and lists nothing; Pick places a replica
// and Assume records the binding before its write is seen, so that the
// replicas placed one after another see each other. It does no I/O. It is
// not safe for concurrent use.
type Cluster struct {
	// nodes is a flat array, for Pick's loop; a removed node leaves a hole
	// (present false) that the next new node takes.
	nodes []node
	index map[string]int32 // node name → position
	holes []int32
	live  int // present nodes
	// functions counts each function's replicas by node position, only
	// the nodes that have some.
	functions map[api.Key]map[int32]int
	// images holds, for each image digest, the nodes that have it.
	images map[string]map[int32]struct{}
	// labels holds, for each label "key=value", the nodes that have it.
	labels map[string]map[int32]struct{}
	// revisions holds what a replica of each revision asks for.
	revisions map[api.Key]Request
	// replicas holds each replica the cluster accounts for: bound ones
	// with their node and what they reserve there.
	replicas map[api.Key]placement
	// waiting holds the replicas bound to a node the cluster does not
	// know (yet), by node name, to account for when it joins.
	waiting map[string]map[api.Key]struct{}
	// epoch marks the nodes of one Pick (node.fnMark, node.imageMark).
	epoch uint64
}

// node is one node's accounting. Pick reads the first fields of every
// node: they are what its loop needs, kept small and together.
type node struct {
	schedulable bool
	present     bool
	// freeCPU and freeMemory are what the bound replicas leave of the
	// allocatable amounts.
	freeCPU, freeMemory int64
	// cpuWeight and memoryWeight are 50/allocatable (0 when none), so
	// that a score multiplies instead of dividing.
	cpuWeight, memoryWeight float64
	// fnMark, imageMark and selectorMark are the epoch of the last Pick
	// whose function the node runs, whose image it has, and whose node
	// selector it matches.
	fnMark, imageMark, selectorMark uint64
	info                            *nodeInfo
}

// nodeInfo is the rest of what the cluster knows of a node.
type nodeInfo struct {
	name             string
	milliCPU, memory int64 // allocatable
	labels           map[string]string
	images           []string
}

// placement is where a replica is bound and what it reserves there.
type placement struct {
	node string
	req  Request
}

// NewCluster returns a cluster that accounts for nodes, revisions and the
// replicas bound to the nodes, as if each were Set in turn.
func NewCluster(nodes []api.Node, replicas []api.Replica, revisions []api.Revision) *Cluster {
	c := &Cluster{
		index:     make(map[string]int32, len(nodes)),
		functions: map[api.Key]map[int32]int{},
		images:    map[string]map[int32]struct{}{},
		labels:    map[string]map[int32]struct{}{},
		revisions: make(map[api.Key]Request, len(revisions)),
		replicas:  make(map[api.Key]placement, len(replicas)),
		waiting:   map[string]map[api.Key]struct{}{},
	}
	for i := range revisions {
		c.SetRevision(&revisions[i])
	}
	for i := range nodes {
		c.SetNode(&nodes[i])
	}
	for i := range replicas {
		c.SetReplica(&replicas[i])
	}
	return c
}

// RequestOf is what a replica of rev asks for. A resource quantity that
// does not parse asks for none (validation rejects such a function before
// it is stored).
func RequestOf(rev *api.Revision) Request {
	s := &rev.Spec.Template
	cpu, _ := api.ParseCPU(s.Resources.CPU)
	mem, _ := api.ParseMemory(s.Resources.Memory)
	return Request{
		Function: api.Key{Namespace: rev.Metadata.Namespace, Name: rev.Spec.Function},
		MilliCPU: cpu, MemoryBytes: mem, Image: rev.Spec.ImageDigest,
		Selector: maps.Clone(s.NodeSelector),
	}
}

// Request is what replica r asks for, from its revision; ok is false when
// the cluster does not know the revision, and such a replica is not to be
// placed (the replica controller removes it).
func (c *Cluster) Request(r *api.Replica) (req Request, ok bool) {
	req, ok = c.revisions[api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision}]
	return req, ok
}

// SetRevision records what the replicas of rev ask for. Revisions do not
// change: the replicas already accounted for keep what they reserve.
func (c *Cluster) SetRevision(rev *api.Revision) {
	c.revisions[api.KeyOf(rev)] = RequestOf(rev)
}

// RemoveRevision forgets a revision; its replicas keep their reservation
// until they are removed.
func (c *Cluster) RemoveRevision(key api.Key) { delete(c.revisions, key) }

// SetNode adds a node or records its change (capacity, state, cordon,
// labels, images), keeping what its replicas reserve. A node is
// schedulable when it is alive, neither cordoned nor draining, and has its
// pod subnet; an allocatable quantity that does not parse counts as none.
func (c *Cluster) SetNode(n *api.Node) {
	name := n.Metadata.Name
	i, ok := c.index[name]
	if !ok {
		if k := len(c.holes); k > 0 {
			i, c.holes = c.holes[k-1], c.holes[:k-1]
		} else {
			i = int32(len(c.nodes))
			c.nodes = append(c.nodes, node{})
		}
		c.index[name] = i
		c.nodes[i] = node{present: true, info: &nodeInfo{name: name}}
		c.live++
	}
	nd := &c.nodes[i]
	info := nd.info
	cpu, _ := api.ParseCPU(n.Status.Allocatable.CPU)
	mem, _ := api.ParseMemory(n.Status.Allocatable.Memory)
	nd.freeCPU += cpu - info.milliCPU
	nd.freeMemory += mem - info.memory
	info.milliCPU, info.memory = cpu, mem
	nd.cpuWeight, nd.memoryWeight = 0, 0
	if cpu > 0 && mem > 0 {
		nd.cpuWeight, nd.memoryWeight = 50/float64(cpu), 50/float64(mem)
	}
	nd.schedulable = !n.Spec.Unschedulable && !n.Spec.Drain && n.Status.State == api.NodeAlive && n.Spec.PodSubnet != ""
	if !maps.Equal(info.labels, n.Metadata.Labels) {
		c.setLabels(i, n.Metadata.Labels)
	}
	c.setImages(i, n.Status.Images)
	if !ok {
		for key := range c.waiting[name] {
			c.account(i, c.replicas[key].req, +1)
		}
		delete(c.waiting, name)
	}
}

// setImages replaces node i's images in the image index.
func (c *Cluster) setImages(i int32, images []string) {
	nd := c.nodes[i].info
	if equalStrings(nd.images, images) {
		return
	}
	for _, d := range nd.images {
		set := c.images[d]
		delete(set, i)
		if len(set) == 0 {
			delete(c.images, d)
		}
	}
	nd.images = append([]string(nil), images...)
	for _, d := range images {
		set := c.images[d]
		if set == nil {
			set = map[int32]struct{}{}
			c.images[d] = set
		}
		set[i] = struct{}{}
	}
}

// setLabels replaces node i's labels in the label index.
func (c *Cluster) setLabels(i int32, labels map[string]string) {
	info := c.nodes[i].info
	for k, v := range info.labels {
		set := c.labels[k+"="+v]
		delete(set, i)
		if len(set) == 0 {
			delete(c.labels, k+"="+v)
		}
	}
	info.labels = maps.Clone(labels)
	for k, v := range labels {
		set := c.labels[k+"="+v]
		if set == nil {
			set = map[int32]struct{}{}
			c.labels[k+"="+v] = set
		}
		set[i] = struct{}{}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// RemoveNode forgets a node. Its replicas stay recorded, reserving
// nothing, until they are removed or the node comes back.
func (c *Cluster) RemoveNode(name string) {
	i, ok := c.index[name]
	if !ok {
		return
	}
	set := map[api.Key]struct{}{}
	for key, p := range c.replicas {
		if p.node == name {
			set[key] = struct{}{}
			c.account(i, p.req, -1)
		}
	}
	if len(set) > 0 {
		c.waiting[name] = set
	}
	c.setImages(i, nil)
	c.setLabels(i, nil)
	c.nodes[i] = node{}
	delete(c.index, name)
	c.holes = append(c.holes, i)
	c.live--
}

// SetReplica records a replica: a bound one reserves, on its node, what
// its revision asks for (nothing when the revision is unknown). An
// unbound one reserves nothing. Setting a replica again with the same
// binding changes nothing, so a binding seen first through Assume and
// then from the watch counts once.
func (c *Cluster) SetReplica(r *api.Replica) {
	key := api.KeyOf(r)
	node := r.Spec.NodeName
	old, had := c.replicas[key]
	if had && old.node == node {
		return
	}
	if had {
		c.unbind(key, old)
	}
	if node == "" {
		return
	}
	req, ok := c.Request(r)
	if !ok {
		req = Request{Function: api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Function}}
	}
	c.bind(key, placement{node: node, req: req})
}

// RemoveReplica forgets a replica and frees what it reserved.
func (c *Cluster) RemoveReplica(key api.Key) {
	if p, ok := c.replicas[key]; ok {
		c.unbind(key, p)
	}
}

// Assume records that replica, asking req, is bound to node, before the
// binding is written: the next Pick counts it. Forget undoes it when the
// write fails.
func (c *Cluster) Assume(replica api.Key, node string, req Request) {
	if old, ok := c.replicas[replica]; ok {
		if old.node == node {
			return
		}
		c.unbind(replica, old)
	}
	c.bind(replica, placement{node: node, req: req})
}

// Forget undoes an Assume whose binding was not written.
func (c *Cluster) Forget(replica api.Key) { c.RemoveReplica(replica) }

func (c *Cluster) bind(key api.Key, p placement) {
	c.replicas[key] = p
	if i, ok := c.index[p.node]; ok {
		c.account(i, p.req, +1)
		return
	}
	set := c.waiting[p.node]
	if set == nil {
		set = map[api.Key]struct{}{}
		c.waiting[p.node] = set
	}
	set[key] = struct{}{}
}

func (c *Cluster) unbind(key api.Key, p placement) {
	delete(c.replicas, key)
	if i, ok := c.index[p.node]; ok {
		c.account(i, p.req, -1)
		return
	}
	if set := c.waiting[p.node]; set != nil {
		delete(set, key)
		if len(set) == 0 {
			delete(c.waiting, p.node)
		}
	}
}

// account adds (sign +1) or removes (-1) one replica asking req on node i.
func (c *Cluster) account(i int32, req Request, sign int) {
	n := &c.nodes[i]
	n.freeCPU -= int64(sign) * req.MilliCPU
	n.freeMemory -= int64(sign) * req.MemoryBytes
	counts := c.functions[req.Function]
	if counts == nil {
		counts = map[int32]int{}
		c.functions[req.Function] = counts
	}
	counts[i] += sign
	if counts[i] <= 0 {
		delete(counts, i)
		if len(counts) == 0 {
			delete(c.functions, req.Function)
		}
	}
}
