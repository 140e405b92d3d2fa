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
	return api.Replica{Metadata: api.ObjectMeta{Name: rev + "-x", Namespace: ns}, Spec: api.ReplicaSpec{Revision: rev, NodeName: node}}
}

func TestNewClusterAccounts(t *testing.T) {
	revs := []api.Revision{
		revision("default", "hello", "hello-00001", "250m", "128Mi"),
		revision("team", "hello", "hello-00001", "1", "1Gi"),
	}
	for _, tc := range []struct {
		name     string
		nodes    []api.Node
		replicas []api.Replica
		want     []Node
	}{
		{
			name: "states that take no replicas",
			nodes: []api.Node{
				apiNode("alive"),
				apiNode("dead", func(n *api.Node) { n.Status.State = api.NodeDead }),
				apiNode("cordoned", func(n *api.Node) { n.Spec.Unschedulable = true }),
				apiNode("no-subnet", func(n *api.Node) { n.Spec.PodSubnet = "" }),
				apiNode("bad-quantities", func(n *api.Node) { n.Status.Allocatable = api.NodeResources{CPU: "lots", Memory: ""} }),
			},
			want: []Node{
				{Name: "alive", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "dead", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "cordoned", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "no-subnet", MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}},
				{Name: "bad-quantities", Schedulable: true, FunctionCount: map[api.Key]int{}},
			},
		},
		{
			name:  "bound replicas reserve their revision's request, per namespace",
			nodes: []api.Node{apiNode("a"), apiNode("b")},
			replicas: []api.Replica{
				replica("default", "hello-00001", "a"),
				replica("default", "hello-00001", "a"),
				replica("team", "hello-00001", "a"),
				replica("team", "hello-00001", "b"),
			},
			want: []Node{
				{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, UsedMilliCPU: 1500, UsedMemory: 1<<30 + 256<<20,
					FunctionCount: map[api.Key]int{api.Key{Namespace: "default", Name: "hello"}: 2, api.Key{Namespace: "team", Name: "hello"}: 1}},
				{Name: "b", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, UsedMilliCPU: 1000, UsedMemory: 1 << 30,
					FunctionCount: map[api.Key]int{api.Key{Namespace: "team", Name: "hello"}: 1}},
			},
		},
		{
			name:  "unbound, orphaned and elsewhere-bound replicas reserve nothing",
			nodes: []api.Node{apiNode("a")},
			replicas: []api.Replica{
				replica("default", "hello-00001", ""),
				replica("default", "hello-00009", "a"),
				replica("default", "hello-00001", "gone"),
			},
			want: []Node{{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}}},
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
		{"revision known", replica("default", "hello-00001", ""), Request{Function: api.Key{Namespace: "default", Name: "hello"}, MilliCPU: 100, MemoryBytes: 64 << 20}, true},
		{"revision gone", replica("default", "hello-00002", ""), Request{}, false},
		{"same name, other namespace", replica("team", "hello-00001", ""), Request{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Request(&tc.r)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("Request = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestClusterPlacesInTurn places replicas one after another, as a pass
// does: each Bind is seen by the next Pick.
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
			for range tc.place {
				n, err := c.Pick(req)
				if err != nil {
					if !errors.Is(err, ErrNoNode) {
						t.Fatalf("Pick: %v, want ErrNoNode", err)
					}
					failed++
					continue
				}
				c.Bind(n, req)
				got = append(got, n)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" || failed != tc.wantFail {
				t.Errorf("placements (-want +got):\n%s\nfailed %d, want %d", diff, failed, tc.wantFail)
			}
		})
	}
}

func TestClusterBindIgnoresUnknownNodes(t *testing.T) {
	c := NewCluster([]api.Node{apiNode("a")}, nil, nil)
	c.Bind("elsewhere", Request{Function: api.Key{Namespace: "default", Name: "hello"}, MilliCPU: 100})
	want := []Node{{Name: "a", Schedulable: true, MilliCPU: 2000, MemoryBytes: 4 << 30, FunctionCount: map[api.Key]int{}}}
	if diff := cmp.Diff(want, c.Nodes()); diff != "" {
		t.Errorf("accounting (-want +got):\n%s", diff)
	}
}

func TestClusterNodesIsACopy(t *testing.T) {
	c := NewCluster([]api.Node{apiNode("a")}, nil, nil)
	c.Nodes()[0].FunctionCount[api.Key{Namespace: "default", Name: "hello"}] = 5
	if got := c.Nodes()[0].FunctionCount[api.Key{Namespace: "default", Name: "hello"}]; got != 0 {
		t.Errorf("changing a copy changed the cluster: count %d", got)
	}
}
