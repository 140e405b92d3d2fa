package scheduler

import (
	"errors"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// pickNode is a node for Pick's table: 2 cores and 4Gi, alive.
func pickNode(name string, mutate ...func(*api.Node)) api.Node {
	return apiNode(name, mutate...)
}

func bound(ns, rev, name, node string) api.Replica {
	r := replica(ns, rev, node)
	r.Metadata.Name = name
	r.Spec.Function = "hello"
	return r
}

func TestPick(t *testing.T) {
	revs := []api.Revision{
		revision("default", "hello", "hello-00001", "100m", "128Mi"),
		revision("default", "other", "other-00001", "1", "2Gi"),
		revision("default", "small", "small-00001", "200m", "256Mi"),
	}
	req := Request{Function: api.Key{Namespace: "default", Name: "hello"}, MilliCPU: 100, MemoryBytes: 128 << 20}
	withImage := req
	withImage.Image = digest
	selecting := req
	selecting.Selector = map[string]string{"disk": "ssd"}
	ssd := func(n *api.Node) { n.Metadata.Labels = map[string]string{"disk": "ssd"} }
	hasImage := func(n *api.Node) { n.Status.Images = []string{digest} }
	small := func(n *api.Node) { n.Status.Allocatable = api.NodeResources{CPU: "1", Memory: "1Gi"} }
	for _, tc := range []struct {
		name     string
		nodes    []api.Node
		replicas []api.Replica
		req      Request
		want     string
		wantErr  string
	}{
		{name: "only one", nodes: []api.Node{pickNode("a")}, req: req, want: "a"},
		{name: "spread wins over free space", nodes: []api.Node{pickNode("a"), pickNode("b", small)},
			replicas: []api.Replica{bound("default", "hello-00001", "hello-00001-x", "a")}, req: req, want: "b"},
		{name: "fewest replicas of the function once every node has some",
			nodes: []api.Node{pickNode("a"), pickNode("b")},
			replicas: []api.Replica{
				bound("default", "hello-00001", "hello-00001-x", "a"), bound("default", "hello-00001", "hello-00001-y", "a"),
				bound("default", "hello-00001", "hello-00001-z", "b"),
			}, req: req, want: "b"},
		{name: "cordoned is skipped", nodes: []api.Node{pickNode("a", func(n *api.Node) { n.Spec.Unschedulable = true }), pickNode("b", small)}, req: req, want: "b"},
		{name: "draining is skipped", nodes: []api.Node{pickNode("a", func(n *api.Node) { n.Spec.Drain = true }), pickNode("b", small)}, req: req, want: "b"},
		{name: "dead is skipped", nodes: []api.Node{pickNode("a", func(n *api.Node) { n.Status.State = api.NodeDead }), pickNode("b", small)}, req: req, want: "b"},
		{name: "full is skipped", nodes: []api.Node{pickNode("a"), pickNode("b", small)},
			replicas: []api.Replica{
				{Metadata: api.ObjectMeta{Name: "other-00001-x", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "other", Revision: "other-00001", NodeName: "b"}},
			}, req: Request{Function: req.Function, MilliCPU: 100, MemoryBytes: 3 << 30}, want: "a"},
		{name: "least allocated", nodes: []api.Node{pickNode("a"), pickNode("b")},
			replicas: []api.Replica{
				{Metadata: api.ObjectMeta{Name: "other-00001-x", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "other", Revision: "other-00001", NodeName: "a"}},
			}, req: req, want: "b"},
		{name: "the image wins over a little more room", nodes: []api.Node{pickNode("a"), pickNode("b", hasImage)},
			replicas: []api.Replica{
				{Metadata: api.ObjectMeta{Name: "small-00001-x", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "small", Revision: "small-00001", NodeName: "b"}},
			}, req: withImage, want: "b"},
		{name: "the image loses to much more room", nodes: []api.Node{pickNode("a", small), pickNode("b", hasImage)},
			replicas: []api.Replica{
				{Metadata: api.ObjectMeta{Name: "other-00001-x", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "other", Revision: "other-00001", NodeName: "b"}},
				{Metadata: api.ObjectMeta{Name: "other-00001-y", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "other", Revision: "other-00001", NodeName: "b"}},
				{Metadata: api.ObjectMeta{Name: "other-00001-y", Namespace: "team"}, Spec: api.ReplicaSpec{Function: "other", Revision: "other-00001", NodeName: "b"}},
			}, req: withImage, want: "a"},
		{name: "spread wins over the image", nodes: []api.Node{pickNode("a"), pickNode("b", hasImage)},
			replicas: []api.Replica{bound("default", "hello-00001", "hello-00001-x", "b")}, req: withImage, want: "a"},
		{name: "node selector", nodes: []api.Node{pickNode("a"), pickNode("b", small, ssd)}, req: selecting, want: "b"},
		{name: "node selector of two labels", nodes: []api.Node{
			pickNode("a", func(n *api.Node) { n.Metadata.Labels = map[string]string{"disk": "ssd"} }),
			pickNode("b", small, func(n *api.Node) { n.Metadata.Labels = map[string]string{"disk": "ssd", "zone": "x"} }),
			pickNode("c", func(n *api.Node) { n.Metadata.Labels = map[string]string{"zone": "x"} }),
		}, req: Request{Function: req.Function, MilliCPU: 100, Selector: map[string]string{"disk": "ssd", "zone": "x"}}, want: "b"},
		{name: "node selector before spread", nodes: []api.Node{pickNode("a"), pickNode("b", ssd)},
			replicas: []api.Replica{bound("default", "hello-00001", "hello-00001-x", "b")}, req: selecting, want: "b"},
		{name: "name breaks ties", nodes: []api.Node{pickNode("z"), pickNode("y")}, req: req, want: "y"},
		{name: "nothing fits", nodes: []api.Node{pickNode("a", func(n *api.Node) { n.Spec.Unschedulable = true }), pickNode("b", small), pickNode("c")},
			req:     Request{Function: req.Function, MilliCPU: 1500, MemoryBytes: 128 << 20, Selector: map[string]string{"disk": "ssd"}},
			wantErr: "3 nodes: 1 not schedulable, 2 not matching the node selector"},
		{name: "not enough of either", nodes: []api.Node{pickNode("a", small), pickNode("b")},
			req:     Request{Function: req.Function, MilliCPU: 1500, MemoryBytes: 5 << 30},
			wantErr: "2 nodes: 1 not enough cpu, 1 not enough memory"},
		{name: "no nodes", req: req, wantErr: "no nodes have joined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(tc.nodes, tc.replicas, revs)
			got, err := c.Pick(tc.req)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrNoNode with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Pick = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRequestOf(t *testing.T) {
	rev := revision("team", "hello", "hello-00002", "250m", "1Gi")
	rev.Spec.ImageDigest = digest
	rev.Spec.Template.NodeSelector = map[string]string{"zone": "a"}
	got := RequestOf(&rev)
	if got.Function != (api.Key{Namespace: "team", Name: "hello"}) || got.MilliCPU != 250 || got.MemoryBytes != 1<<30 ||
		got.Image != digest || got.Selector["zone"] != "a" {
		t.Errorf("RequestOf = %+v", got)
	}
	rev.Spec.Template.NodeSelector["zone"] = "b"
	if got.Selector["zone"] != "a" {
		t.Error("the request shares the revision's selector")
	}
}
