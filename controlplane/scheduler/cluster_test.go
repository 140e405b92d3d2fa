package scheduler

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func apiNode(name string, mutate ...func(*api.Node)) api.Node {
	n := api.Node{
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.NodeSpec{PodSubnet: "10.244.0.0/24"},
		Status:   api.NodeStatus{State: api.NodeAlive, Allocatable: api.NodeResources{CPU: "2", Memory: "4Gi"}},
	}
	for _, m := range mutate {
		m(&n)
	}
	return n
}

func revision(ns, fn, name, cpu, mem string) api.Revision {
	return api.Revision{
		Metadata: api.ObjectMeta{Name: name, Namespace: ns},
		Spec: api.RevisionSpec{Function: fn, Template: api.FunctionSpec{
			Resources: api.Resources{CPU: cpu, Memory: mem},
		}},
	}
}

func replica(ns, rev, node string) api.Replica {
	fn, _, _ := api.ParseRevisionName(rev)
	return api.Replica{Metadata: api.ObjectMeta{Name: rev + "-x", Namespace: ns}, Spec: api.ReplicaSpec{Function: fn, Revision: rev, NodeName: node}}
}

var (
	helloKey = api.Key{Namespace: "default", Name: "hello"}
	teamKey  = api.Key{Namespace: "team", Name: "hello"}
)

func TestNewClusterAccounts(t *testing.T) {
	revs := []api.Revision{
		revision("default", "hello", "hello-00001", "250m", "128Mi"),
		revision("team", "hello", "hello-00001", "1", "1Gi"),
	}
	named := func(name string, r api.Replica) api.Replica { r.Metadata.Name = name; return r }
	for _, tc := range []struct {
		name     string
		nodes    []api.Node
		replicas []api.Replica
		want     []Node
	}{
		{
			name: "states that take no replicas",
			nodes: []api.Node{
				apiNode("alive", func(n *api.Node) {
					n.Metadata.Labels = map[string]string{"disk": "ssd"}
					n.Status.Images = []string{digest}
				}),
				apiNode("dead", func(n *api.Node) { n.Status.State = api.NodeDead }),
				apiNode("cordoned", func(n *api.Node) { n.Spec.Unschedulable = true }),
				apiNode("draining", func(n *api.Node) { n.Spec.Drain = true }),
				apiNode("no-subnet", func(n *api.Node) { n.Spec.PodSubnet = "" }),
				apiNode("bad-quantities", func(n *api.Node) { n.Status.Allocatable = api.NodeResources{CPU: "lots", Memory: ""} }),
			},
			want: []Node{
				{Name: "alive", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{},
					Labels: map[string]string{"disk": "ssd"}, Images: []string{digest}},
				{Name: "bad-quantities", Schedulable: true, FunctionCount: map[api.Key]int{}},
				{Name: "cordoned", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "dead", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "draining", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "no-subnet", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
			},
		},
		{
			name:  "bound replicas reserve their revision's request, per namespace",
			nodes: []api.Node{apiNode("a"), apiNode("b")},
			replicas: []api.Replica{
				named("hello-00001-a", replica("default", "hello-00001", "a")),
				named("hello-00001-b", replica("default", "hello-00001", "a")),
				named("hello-00001-c", replica("team", "hello-00001", "a")),
				named("hello-00001-d", replica("team", "hello-00001", "b")),
			},
			want: []Node{
				{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, UsedMilliCPU: 1500, UsedMemory: 1<<30 + 256<<20,
					FunctionCount: map[api.Key]int{helloKey: 2, teamKey: 1}},
				{Name: "b", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, UsedMilliCPU: 1000, UsedMemory: 1 << 30,
					FunctionCount: map[api.Key]int{teamKey: 1}},
			},
		},
		{
			name:  "a replica set twice counts once",
			nodes: []api.Node{apiNode("a")},
			replicas: []api.Replica{
				replica("default", "hello-00001", "a"),
				replica("default", "hello-00001", "a"),
			},
			want: []Node{{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, UsedMilliCPU: 250, UsedMemory: 128 << 20,
				FunctionCount: map[api.Key]int{helloKey: 1}}},
		},
		{
			name:  "unbound and elsewhere-bound replicas reserve nothing; orphans count for spread only",
			nodes: []api.Node{apiNode("a")},
			replicas: []api.Replica{
				named("hello-00001-a", replica("default", "hello-00001", "")),
				named("hello-00009-b", replica("default", "hello-00009", "a")),
				named("hello-00001-c", replica("default", "hello-00001", "gone")),
			},
			want: []Node{{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{helloKey: 1}}},
		},
		{name: "no nodes", replicas: []api.Replica{replica("default", "hello-00001", "a")}, want: []Node{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewCluster(tc.nodes, tc.replicas, revs).Nodes()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("accounting (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClusterRequest(t *testing.T) {
	c := NewCluster(nil, nil, []api.Revision{revision("default", "hello", "hello-00001", "100m", "64Mi")})
	for _, tc := range []struct {
		name   string
		r      api.Replica
		want   Request
		wantOK bool
	}{
		{"revision known", replica("default", "hello-00001", ""), Request{Function: helloKey, MilliCPU: 100, MemoryBytes: 64 << 20}, true},
		{"revision gone", replica("default", "hello-00002", ""), Request{}, false},
		{"same name, other namespace", replica("team", "hello-00001", ""), Request{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Request(&tc.r)
			if ok != tc.wantOK || !cmp.Equal(got, tc.want) {
				t.Errorf("Request = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestClusterPlacesInTurn places replicas one after another, as a pass
// does: each Assume is seen by the next Pick.
func TestClusterPlacesInTurn(t *testing.T) {
	revs := []api.Revision{revision("default", "hello", "hello-00001", "1", "1Gi")}
	for _, tc := range []struct {
		name     string
		nodes    []api.Node
		bound    []api.Replica
		place    int
		want     []string
		wantFail int // how many of the last placements find no node
	}{
		{"spread over two nodes", []api.Node{apiNode("a"), apiNode("b")}, nil, 4, []string{"a", "b", "a", "b"}, 0},
		{"already bound ones count", []api.Node{apiNode("a"), apiNode("b")},
			[]api.Replica{replica("default", "hello-00001", "a")}, 1, []string{"b"}, 0},
		{"until the cpu runs out", []api.Node{apiNode("a")}, nil, 3, []string{"a", "a"}, 1},
		{"no schedulable node", []api.Node{apiNode("a", func(n *api.Node) { n.Status.State = api.NodeDead })}, nil, 1, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(tc.nodes, tc.bound, revs)
			req, _ := c.Request(&api.Replica{Metadata: api.ObjectMeta{Namespace: "default"}, Spec: api.ReplicaSpec{Revision: "hello-00001"}})
			var got []string
			failed := 0
			for i := range tc.place {
				n, err := c.Pick(req)
				if err != nil {
					if !errors.Is(err, ErrNoNode) {
						t.Fatalf("Pick: %v, want ErrNoNode", err)
					}
					failed++
					continue
				}
				c.Assume(api.Key{Namespace: "default", Name: "hello-00001-" + string(rune('a'+i))}, n, req)
				got = append(got, n)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" || failed != tc.wantFail {
				t.Errorf("placements (-want +got):\n%s\nfailed %d, want %d", diff, failed, tc.wantFail)
			}
		})
	}
}

// TestClusterFollowsChanges applies the changes a watch delivers, one by
// one, and checks the accounting after each.
func TestClusterFollowsChanges(t *testing.T) {
	rev := revision("default", "hello", "hello-00001", "500m", "1Gi")
	rep := func(name, node string) *api.Replica {
		return &api.Replica{Metadata: api.ObjectMeta{Name: name, Namespace: "default"},
			Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: node}}
	}
	key := func(name string) api.Key { return api.Key{Namespace: "default", Name: name} }
	used := func(c *Cluster) map[string]int64 {
		out := map[string]int64{}
		for _, n := range c.Nodes() {
			out[n.Name] = n.UsedMilliCPU
		}
		return out
	}
	c := NewCluster(nil, nil, []api.Revision{rev})
	req, _ := c.Request(rep("hello-00001-a", ""))
	a, b := apiNode("a"), apiNode("b")
	for _, step := range []struct {
		name string
		do   func()
		want map[string]int64
	}{
		{"nodes join", func() { c.SetNode(&a); c.SetNode(&b) }, map[string]int64{"a": 0, "b": 0}},
		{"a replica is created unbound", func() { c.SetReplica(rep("hello-00001-a", "")) }, map[string]int64{"a": 0, "b": 0}},
		{"the scheduler assumes its binding", func() { c.Assume(key("hello-00001-a"), "a", req) }, map[string]int64{"a": 500, "b": 0}},
		{"the watch confirms it", func() { c.SetReplica(rep("hello-00001-a", "a")) }, map[string]int64{"a": 500, "b": 0}},
		{"a binding that failed is forgotten", func() {
			c.Assume(key("hello-00001-b"), "b", req)
			c.Forget(key("hello-00001-b"))
		}, map[string]int64{"a": 500, "b": 0}},
		{"a replica moves", func() { c.SetReplica(rep("hello-00001-a", "b")) }, map[string]int64{"a": 0, "b": 500}},
		{"its node leaves", func() { c.RemoveNode("b") }, map[string]int64{"a": 0}},
		{"a replica is bound to a node not seen yet", func() { c.SetReplica(rep("hello-00001-c", "b")) }, map[string]int64{"a": 0}},
		{"the node comes back with both", func() { c.SetNode(&b) }, map[string]int64{"a": 0, "b": 1000}},
		{"a node changes, keeping its reservations", func() {
			b.Spec.Unschedulable = true
			c.SetNode(&b)
		}, map[string]int64{"a": 0, "b": 1000}},
		{"replicas go", func() {
			c.RemoveReplica(key("hello-00001-a"))
			c.RemoveReplica(key("hello-00001-c"))
			c.RemoveReplica(key("never-seen-x"))
		}, map[string]int64{"a": 0, "b": 0}},
	} {
		step.do()
		if diff := cmp.Diff(step.want, used(c)); diff != "" {
			t.Fatalf("after %q, used cpu (-want +got):\n%s", step.name, diff)
		}
	}
	if got := c.Nodes(); len(got) != 2 || got[1].Schedulable || len(got[1].FunctionCount) != 0 {
		t.Errorf("nodes at the end: %+v", got)
	}
	// The hole b left was taken again: a third node gets a fresh one.
	d := apiNode("d")
	c.SetNode(&d)
	if n, err := c.Pick(req); err != nil || n != "a" {
		t.Errorf("Pick = %q, %v; want a (ties broken by name, b cordoned)", n, err)
	}
}

func TestClusterImagesFollowTheNode(t *testing.T) {
	rev := revision("default", "hello", "hello-00001", "100m", "64Mi")
	rev.Spec.ImageDigest = digest
	n := apiNode("b")
	c := NewCluster([]api.Node{apiNode("a"), n}, nil, []api.Revision{rev})
	req, _ := c.Request(&api.Replica{Metadata: api.ObjectMeta{Namespace: "default"}, Spec: api.ReplicaSpec{Revision: "hello-00001"}})
	if got, _ := c.Pick(req); got != "a" {
		t.Fatalf("no node has the image: Pick = %q, want a", got)
	}
	n.Status.Images = []string{digest}
	c.SetNode(&n)
	if got, _ := c.Pick(req); got != "b" {
		t.Fatalf("b has the image: Pick = %q, want b", got)
	}
	n.Status.Images = nil
	c.SetNode(&n)
	if got, _ := c.Pick(req); got != "a" {
		t.Fatalf("b dropped the image: Pick = %q, want a", got)
	}
}

func TestClusterLabelsFollowTheNode(t *testing.T) {
	n := apiNode("b")
	c := NewCluster([]api.Node{apiNode("a"), n}, nil, nil)
	req := Request{Function: helloKey, MilliCPU: 100, Selector: map[string]string{"disk": "ssd"}}
	if _, err := c.Pick(req); !errors.Is(err, ErrNoNode) {
		t.Fatalf("no node has the label: %v, want ErrNoNode", err)
	}
	n.Metadata.Labels = map[string]string{"disk": "ssd"}
	c.SetNode(&n)
	if got, err := c.Pick(req); got != "b" {
		t.Fatalf("b has the label: Pick = %q, %v; want b", got, err)
	}
	c.RemoveNode("b")
	if _, err := c.Pick(req); !errors.Is(err, ErrNoNode) {
		t.Fatalf("b left: %v, want ErrNoNode", err)
	}
}

func TestClusterNodesIsACopy(t *testing.T) {
	c := NewCluster([]api.Node{apiNode("a")}, nil, nil)
	c.Nodes()[0].FunctionCount[helloKey] = 5
	if got := c.Nodes()[0].FunctionCount[helloKey]; got != 0 {
		t.Errorf("changing a copy changed the cluster: count %d", got)
	}
}
