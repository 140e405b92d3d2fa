package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// waitFor polls cond until it holds or 30s pass.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s; last state: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func registerNode(t *testing.T, c *client.Client, name string, lastSeen time.Time) *api.Node {
	t.Helper()
	n := &api.Node{
		Metadata: api.ObjectMeta{Name: name},
		Status: api.NodeStatus{State: api.NodeAlive, LastSeen: lastSeen,
			Allocatable: api.NodeResources{CPU: "2", Memory: "4Gi"}},
	}
	var out api.Node
	if err := c.Do(context.Background(), "POST", client.Path("nodes", "", ""), n, &out); err != nil {
		t.Fatalf("register node %s: %v", name, err)
	}
	return &out
}

func replicasOf(t *testing.T, c *client.Client, fn string) []api.Replica {
	t.Helper()
	l, err := client.List[api.Replica](context.Background(), c, "replicas", "default", url.Values{"function": {fn}})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestScaleMakesReplicasSpreadOverNodes(t *testing.T) {
	// Scales are set by hand here: the autoscaler would hold minScale.
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	c := in.Client()
	ctx := context.Background()
	a := registerNode(t, c, "node-a", time.Now())
	b := registerNode(t, c, "node-b", time.Now())
	if a.Spec.PodSubnet == "" || a.Spec.PodSubnet == b.Spec.PodSubnet {
		t.Fatalf("node subnets %q and %q: want two distinct", a.Spec.PodSubnet, b.Spec.PodSubnet)
	}

	f := hello("example.test/hello:v1")
	f.Spec.Scaling.MinScale = 2
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two replicas bound to two nodes", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		nodes := map[string]bool{}
		for _, r := range reps {
			nodes[r.Spec.NodeName] = true
		}
		return len(reps) == 2 && nodes["node-a"] && nodes["node-b"], fmt.Sprint(reps)
	})

	// A node agent watching its node sees only its own replicas.
	l, err := client.List[api.Replica](ctx, c, "replicas", "default", url.Values{"node": {"node-a"}})
	if err != nil || len(l.Items) != 1 || l.Items[0].Spec.NodeName != "node-a" {
		t.Fatalf("replicas of node-a: %+v, %v", l, err)
	}

	// The agent reports Ready through the status subresource; the Scale counts it.
	r := l.Items[0]
	r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2", Port: 8080}
	r.Spec.NodeName = "somewhere-else" // ignored: status writes keep the spec
	if err := c.Do(ctx, "PUT", client.Path("replicas", "default", r.Metadata.Name)+"/status", &r, &r); err != nil {
		t.Fatal(err)
	}
	if r.Spec.NodeName != "node-a" {
		t.Errorf("status write changed the spec: node %q", r.Spec.NodeName)
	}
	waitFor(t, "scale status to count the ready replica", func() (bool, string) {
		sc, err := client.Get[api.Scale](ctx, c, "scales", "default", "hello-00001")
		if err != nil {
			return false, err.Error()
		}
		return sc.Status.Replicas == 2 && sc.Status.ReadyReplicas == 1, fmt.Sprintf("%+v", sc.Status)
	})

	// Scale down to one: the replica that is not ready goes first.
	sc, err := client.Get[api.Scale](ctx, c, "scales", "default", "hello-00001")
	if err != nil {
		t.Fatal(err)
	}
	sc.Spec.Replicas = 1
	if err := c.Do(ctx, "PUT", client.Path("scales", "default", "hello-00001"), sc, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one replica left, the ready one", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		return len(reps) == 1 && reps[0].Metadata.Name == r.Metadata.Name, fmt.Sprint(reps)
	})
}

func TestDeadNodeReplicasMoveElsewhere(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) {
		c.Controllers.NodeTimeout = time.Second
		c.Controllers.Resync = 100 * time.Millisecond
	})
	c := in.Client()
	ctx := context.Background()
	// node-a last beat long ago; node-b beats on.
	registerNode(t, c, "node-a", time.Now())
	f := hello("example.test/hello:v1")
	f.Spec.Scaling.MinScale = 1 // no traffic here: keep the autoscaler from scaling to zero
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a replica on node-a", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		return len(reps) == 1 && reps[0].Spec.NodeName == "node-a", fmt.Sprint(reps)
	})
	registerNode(t, c, "node-b", time.Now().Add(time.Hour))
	waitFor(t, "node-a dead and its replica replaced on node-b", func() (bool, string) {
		n, err := client.Get[api.Node](ctx, c, "nodes", "", "node-a")
		if err != nil {
			return false, err.Error()
		}
		reps := replicasOf(t, c, "hello")
		return n.Status.State == api.NodeDead && len(reps) == 1 && reps[0].Spec.NodeName == "node-b",
			fmt.Sprintf("node-a %s, replicas %v", n.Status.State, reps)
	})
}

func TestDeployMovesTrafficOnceTheRevisionIsReady(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Controllers.Resync = 100 * time.Millisecond })
	c := in.Client()
	ctx := context.Background()
	registerNode(t, c, "node-a", time.Now().Add(time.Hour))
	f := hello("example.test/hello:v1")
	f.Spec.Scaling.MinScale = 1 // no traffic here: keep the autoscaler from scaling to zero
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	traffic := func() string {
		tr, err := client.Get[api.Traffic](ctx, c, "traffic", "default", "hello")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(tr.Spec.Targets)
	}
	// ready reports the bound replica of rev Ready, as its agent would.
	ready := func(rev string) {
		t.Helper()
		var r api.Replica
		waitFor(t, "a replica of "+rev+" bound to node-a", func() (bool, string) {
			for _, x := range replicasOf(t, c, "hello") {
				if x.Spec.Revision == rev && x.Spec.NodeName == "node-a" {
					r = x
					return true, ""
				}
			}
			return false, fmt.Sprint(replicasOf(t, c, "hello"))
		})
		r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2", Port: 8080}
		if err := c.Do(ctx, "PUT", client.Path("replicas", "default", r.Metadata.Name)+"/status", &r, nil); err != nil {
			t.Fatal(err)
		}
	}
	latestReady := func() string {
		got, err := client.Get[api.Function](ctx, c, "functions", "default", "hello")
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.LatestReadyRevision
	}

	// The first revision takes the traffic at once, and is recorded as
	// ready when its replica is.
	if got := traffic(); got != "[{hello-00001 100}]" {
		t.Fatalf("first deploy: traffic %s, want all on hello-00001", got)
	}
	ready("hello-00001")
	waitFor(t, "hello-00001 recorded as the latest ready revision", func() (bool, string) {
		got := latestReady()
		return got == "hello-00001", got
	})

	// A second deploy: the traffic stays on hello-00001 while hello-00002
	// has no Ready replica (an image that does not pull, say)...
	f.Spec.Image = "example.test/hello:v2"
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // five controller passes
	if got := traffic(); got != "[{hello-00001 100}]" {
		t.Fatalf("traffic moved to a revision with no Ready replica: %s", got)
	}
	// ... and moves, all of it, once hello-00002 has one.
	ready("hello-00002")
	waitFor(t, "traffic on hello-00002", func() (bool, string) {
		got := traffic()
		return got == "[{hello-00002 100}]" && latestReady() == "hello-00002", got
	})

	// After the rollout, traffic someone sets by hand stays as set.
	tr, err := client.Get[api.Traffic](ctx, c, "traffic", "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	tr.Spec.Targets = []api.TrafficTarget{{Revision: "hello-00001", Percent: 100}}
	if err := c.Do(ctx, "PUT", client.Path("traffic", "default", "hello"), tr, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := traffic(); got != "[{hello-00001 100}]" {
		t.Errorf("a pass overrode the traffic set by hand: %s", got)
	}

	// A split set by hand while a revision rolls out stays when it is
	// Ready: the user spoke after the deploy.
	setTraffic := func(targets ...api.TrafficTarget) {
		t.Helper()
		tr, err := client.Get[api.Traffic](ctx, c, "traffic", "default", "hello")
		if err != nil {
			t.Fatal(err)
		}
		tr.Spec.Targets = targets
		if err := c.Do(ctx, "PUT", client.Path("traffic", "default", "hello"), tr, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Spec.Image = "example.test/hello:v3"
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	setTraffic(api.TrafficTarget{Revision: "hello-00001", Percent: 90}, api.TrafficTarget{Revision: "hello-00003", Percent: 10})
	ready("hello-00003")
	waitFor(t, "hello-00003 recorded as ready", func() (bool, string) {
		got := latestReady()
		return got == "hello-00003", got
	})
	if got := traffic(); got != "[{hello-00001 90} {hello-00003 10}]" {
		t.Errorf("the rollout overrode a split set during it: %s", got)
	}

	// The next deploy moves the traffic again: the split predates it.
	f.Spec.Image = "example.test/hello:v4"
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	ready("hello-00004")
	waitFor(t, "traffic on hello-00004", func() (bool, string) {
		got := traffic()
		return got == "[{hello-00004 100}]", got
	})
}

func TestPromoteRevisionOnlyTheLatestOnce(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	c := in.Client()
	ctx := context.Background()
	st := in.Store()
	f := hello("example.test/hello:v1")
	for _, img := range []string{"example.test/hello:v1", "example.test/hello:v2"} {
		f.Spec.Image = img
		if _, err := c.PutFunction(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if moved, err := st.PromoteRevision(ctx, "default", "hello", "hello-00001"); err != nil || moved {
		t.Errorf("promote a revision that is not the latest: moved %v, %v; want neither", moved, err)
	}
	if moved, err := st.PromoteRevision(ctx, "default", "hello", "hello-00002"); err != nil || !moved {
		t.Errorf("promote the latest: moved %v, %v; want moved", moved, err)
	}
	if moved, err := st.PromoteRevision(ctx, "default", "hello", "hello-00002"); err != nil || moved {
		t.Errorf("promote it again: moved %v, %v; want nothing done", moved, err)
	}
	if _, err := st.PromoteRevision(ctx, "default", "nope", "nope-00001"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("promote in a missing function: %v, want not found", err)
	}
	got, err := client.Get[api.Function](ctx, c, "functions", "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.LatestReadyRevision != "hello-00002" || got.Status.LatestRevision != "hello-00002" {
		t.Errorf("status after the promotion: %+v", got.Status)
	}
	// A deploy keeps what the rollout recorded.
	f.Spec.Image = "example.test/hello:v3"
	out, err := c.PutFunction(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status.LatestReadyRevision != "hello-00002" || out.Status.LatestRevision != "hello-00003" {
		t.Errorf("status after the next deploy: %+v", out.Status)
	}
}
