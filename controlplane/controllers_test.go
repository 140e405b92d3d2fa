package controlplane_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/store"
)

// waitTimeout bounds a wait for something that must happen; it is a bound
// on a hang, not a measurement.
const waitTimeout = time.Minute

// waitFor checks cond after every change in the server's etcd until it
// holds; state describes what it saw, for the failure.
func waitFor(t *testing.T, in *controlplanetest.Instance, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cli := in.Store().Client()
	// Watch from the revision read first, so that no change between the
	// check and the watch's start goes unseen.
	resp, err := cli.Get(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-wch:
		case <-ctx.Done():
			t.Fatalf("waited %s for %s; last state: %s", waitTimeout, what, state)
		}
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
	if err := c.Do(context.Background(), "POST", client.CollectionPath[api.Node](""), n, &out); err != nil {
		t.Fatalf("register node %s: %v", name, err)
	}
	return &out
}

func replicasOf(t *testing.T, c *client.Client, fn string) []api.Replica {
	t.Helper()
	l, err := client.List[api.Replica](context.Background(), c, "default", url.Values{"function": {fn}})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// The controllers' rules are tested pass by pass in package controllers;
// these tests check that the server runs them, through the API.

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
	waitFor(t, in, "two replicas bound to two nodes", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		nodes := map[string]bool{}
		for _, r := range reps {
			nodes[r.Spec.NodeName] = true
		}
		return len(reps) == 2 && nodes["node-a"] && nodes["node-b"], fmt.Sprint(reps)
	})

	// A node agent watching its node sees only its own replicas.
	l, err := client.List[api.Replica](ctx, c, "default", url.Values{"node": {"node-a"}})
	if err != nil || len(l.Items) != 1 || l.Items[0].Spec.NodeName != "node-a" {
		t.Fatalf("replicas of node-a: %+v, %v", l, err)
	}

	// The agent reports Ready through the status subresource; the Scale counts it.
	r := l.Items[0]
	r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: "10.244.0.2", Port: 8080}
	r.Spec.NodeName = "somewhere-else" // ignored: status writes keep the spec
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Replica](api.Key{Namespace: "default", Name: r.Metadata.Name})+"/status", &r, &r); err != nil {
		t.Fatal(err)
	}
	if r.Spec.NodeName != "node-a" {
		t.Errorf("status write changed the spec: node %q", r.Spec.NodeName)
	}
	waitFor(t, in, "scale status to count the ready replica", func() (bool, string) {
		sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
		if err != nil {
			return false, err.Error()
		}
		return sc.Status.Replicas == 2 && sc.Status.ReadyReplicas == 1, fmt.Sprintf("%+v", sc.Status)
	})

	// Scale down to one: the replica that is not ready goes first.
	sc, err := client.Get[api.Scale](ctx, c, api.Key{Namespace: "default", Name: "hello-00001"})
	if err != nil {
		t.Fatal(err)
	}
	sc.Spec.Replicas = 1
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Scale](api.Key{Namespace: "default", Name: "hello-00001"}), sc, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, in, "one replica left, the ready one", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		return len(reps) == 1 && reps[0].Metadata.Name == r.Metadata.Name, fmt.Sprint(reps)
	})
}
