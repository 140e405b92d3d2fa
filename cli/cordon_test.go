package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func TestCordon(t *testing.T) {
	for _, tc := range []struct {
		name     string
		uncordon bool
		node     string
		before   api.NodeSpec
		conflict bool // the first write finds the node changed
		wantSpec api.NodeSpec
		wantOut  string
		wantErr  string
		wantPuts int
	}{
		{name: "cordon", node: "node-1", wantSpec: api.NodeSpec{Unschedulable: true},
			wantOut: "node \"node-1\" cordoned\n", wantPuts: 1},
		{name: "cordon again", node: "node-1", before: api.NodeSpec{Unschedulable: true}, wantSpec: api.NodeSpec{Unschedulable: true},
			wantOut: "node \"node-1\" already cordoned\n"},
		{name: "a write that races is retried", node: "node-1", conflict: true, wantSpec: api.NodeSpec{Unschedulable: true},
			wantOut: "node \"node-1\" cordoned\n", wantPuts: 2},
		{name: "uncordon ends a drain", uncordon: true, node: "node-1", before: api.NodeSpec{Unschedulable: true, Drain: true},
			wantOut: "node \"node-1\" uncordoned\n", wantPuts: 1},
		{name: "uncordon a schedulable node", uncordon: true, node: "node-1", wantOut: "node \"node-1\" already uncordoned\n"},
		{name: "no such node", node: "node-9", wantErr: "node \"node-9\" not found: `surge nodes` lists them"},
		{name: "bad name", node: "Node_1", wantErr: "node \"Node_1\": name " + api.NameRule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := seededFake(t)
			f.edit(func() {
				f.nodes["node-1"].Spec = tc.before
				f.nodes["node-1"].Metadata.ResourceVersion = "7"
				if tc.conflict {
					f.failOnce["PUT /v1/nodes/node-1"] = api.NewError(http.StatusConflict, api.ReasonConflict, "node changed")
				}
			})
			s, out, _ := testStreams()
			err := runCordon(t.Context(), &CordonOptions{Streams: s, NewClient: f.newClient, Node: tc.node, Uncordon: tc.uncordon})
			if got := errString(err); got != tc.wantErr {
				t.Fatalf("error = %q, want %q", got, tc.wantErr)
			}
			if got := out.String(); got != tc.wantOut {
				t.Errorf("stdout = %q, want %q", got, tc.wantOut)
			}
			if got := len(f.paths(http.MethodPut)); got != tc.wantPuts {
				t.Errorf("%d PUTs, want %d", got, tc.wantPuts)
			}
			if tc.wantErr == "" {
				if diff := cmp.Diff(tc.wantSpec, f.nodes["node-1"].Spec); diff != "" {
					t.Errorf("node spec (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// onNode binds a Ready replica of hello-00003 to node.
func onNode(f *fakeAPI, name, node string) {
	f.replicas[name] = &api.Replica{Kind: api.KindReplica,
		Metadata: api.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{api.LabelFunction: "hello"}},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00003", NodeName: node},
		Status:   api.ReplicaStatus{Phase: api.ReplicaReady}}
}

func TestDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		// step runs before each list of the replicas on the node, as the
		// control plane would act between polls; it may stop a replica.
		step    func(f *fakeAPI, polls int)
		wait    time.Duration
		wantOut string
		wantErr string
	}{
		{
			name: "replicas move one by one",
			step: func(f *fakeAPI, polls int) {
				switch polls {
				case 2:
					delete(f.replicas, "hello-00003-aaaaa")
				case 3:
					delete(f.replicas, "hello-00003-bbbbb")
				}
			},
			wait: time.Minute,
			wantOut: "node \"node-1\" cordoned; draining 2 replicas\nreplica hello-00003-aaaaa moved\n" +
				"replica hello-00003-bbbbb moved\nnode \"node-1\" drained: 2 replicas moved\n",
		},
		{
			name: "a replacement finds no node",
			step: func(f *fakeAPI, polls int) {
				f.replicas["hello-00003-ccccc"] = &api.Replica{Metadata: api.ObjectMeta{Name: "hello-00003-ccccc", Namespace: "default"},
					Spec:   api.ReplicaSpec{Function: "hello", Revision: "hello-00003"},
					Status: api.ReplicaStatus{Phase: api.ReplicaPending, Message: "no node fits: 2 nodes: 1 not schedulable, 1 not enough cpu"}}
			},
			wait:    time.Minute,
			wantOut: "node \"node-1\" cordoned; draining 2 replicas\n",
			wantErr: "node \"node-1\": 2 replicas cannot move: their replacements find no node (no node fits: 2 nodes: 1 not schedulable, 1 not enough cpu): " +
				"add a node or uncordon one; the node stays cordoned and draining until `surge uncordon node-1`",
		},
		{
			name:    "the wait ends first",
			step:    func(*fakeAPI, int) {},
			wait:    50 * time.Millisecond,
			wantOut: "node \"node-1\" cordoned; draining 2 replicas\n",
			wantErr: "node \"node-1\": 2 replicas still on it after 50ms; the drain goes on: run `surge drain node-1` again to wait, or `surge uncordon node-1` to stop it",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := seededFake(t)
			polls := 0
			f.edit(func() {
				for name, r := range f.replicas {
					if r.Spec.NodeName == "node-1" {
						delete(f.replicas, name)
					}
				}
				onNode(f, "hello-00003-aaaaa", "node-1")
				onNode(f, "hello-00003-bbbbb", "node-1")
				f.before = func(r *http.Request) {
					if r.Method == http.MethodGet && r.URL.Path == "/v1/replicas" && r.URL.Query().Get("node") == "node-1" {
						polls++
						tc.step(f, polls)
					}
				}
			})
			s, out, _ := testStreams()
			err := runDrain(t.Context(), &DrainOptions{Streams: s, NewClient: f.newClient, Node: "node-1", Wait: tc.wait, Poll: time.Millisecond})
			if got := errString(err); got != tc.wantErr {
				t.Errorf("error = %q, want %q", got, tc.wantErr)
			}
			if got := out.String(); got != tc.wantOut {
				t.Errorf("stdout = %q, want %q", got, tc.wantOut)
			}
			puts := f.paths(http.MethodPut)
			if len(puts) != 1 || puts[0] != "/v1/nodes/node-1" {
				t.Fatalf("PUTs %v, want one of node-1", puts)
			}
			var n api.Node
			f.edit(func() {
				for _, r := range f.requests {
					if r.Method == http.MethodPut {
						_ = json.Unmarshal(r.Body, &n)
					}
				}
			})
			if !n.Spec.Unschedulable || !n.Spec.Drain {
				t.Errorf("node written with spec %+v, want cordoned and draining", n.Spec)
			}
		})
	}
}

func TestDeployNodeSelector(t *testing.T) {
	f := seededFake(t)
	s, _, _ := testStreams()
	o := deployOpts(f, s, "sel", func(o *DeployOptions) {
		o.Image, o.Set["image"] = "example.test/sel:v1", true
		o.NodeSelector = []string{"disk=ssd", "zone=a"}
	})
	if err := runDeploy(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	o.NodeSelector = []string{"zone-"}
	if err := runDeploy(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	puts := f.puts(t)
	if len(puts) != 2 {
		t.Fatalf("%d PUTs, want 2", len(puts))
	}
	if diff := cmp.Diff(map[string]string{"disk": "ssd", "zone": "a"}, puts[0].Spec.NodeSelector); diff != "" {
		t.Errorf("first deploy's selector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"disk": "ssd"}, puts[1].Spec.NodeSelector); diff != "" {
		t.Errorf("second deploy's selector (-want +got):\n%s", diff)
	}
	o.NodeSelector = []string{"nokey"}
	if err := runDeploy(t.Context(), o); err == nil || !strings.Contains(err.Error(), `--node-selector "nokey": want KEY=VALUE`) {
		t.Errorf("bad pair: %v", err)
	}
}
