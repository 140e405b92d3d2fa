package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/gossip"
)

// agentMember joins the server's gossip as the agent of node name; the
// test stops it when it ends (Close before that to simulate a crash).
func agentMember(t *testing.T, in *controlplanetest.Instance, name string) *gossip.Gossip {
	t.Helper()
	g, err := gossip.Start(gossip.Options{Role: gossip.RoleAgent, NodeName: name, Addr: "127.0.0.1:0",
		Key: in.Server().GossipKey(), Handler: nopHandler{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	if _, err := g.Join(context.Background(), []string{in.Server().GossipAddr()}); err != nil {
		t.Fatalf("join the server's gossip: %v", err)
	}
	return g.Gossip
}

type nopHandler struct{}

func (nopHandler) OnNode(gossip.NodeEvent)         {}
func (nopHandler) OnEndpoint(gossip.EndpointEvent) {}

// TestGossipDeathMovesReplicasAtOnce: a node agent's gossip member dies;
// the node controller declares the node dead from gossip once a beat is
// missed (LeaseConfirm), long before the heartbeat timeout, and its
// replica moves to another node.
func TestGossipDeathMovesReplicasAtOnce(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) {
		c.GossipAddr = "127.0.0.1:0"
		c.Controllers.NodeTimeout = time.Hour
		c.Controllers.LeaseConfirm = time.Second // the test's node never beats again
		c.Controllers.Resync = 100 * time.Millisecond
	})
	c := in.Client()
	ctx := context.Background()

	g := agentMember(t, in, "node-a") // node-a's agent, as far as gossip goes

	registerNode(t, c, "node-a", time.Now())
	f := hello("example.test/hello:v1")
	f.Spec.Scaling.MinScale = 1
	if _, err := c.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, in, "a replica on node-a", func() (bool, string) {
		reps := replicasOf(t, c, "hello")
		return len(reps) == 1 && reps[0].Spec.NodeName == "node-a", fmt.Sprint(reps)
	})
	registerNode(t, c, "node-b", time.Now())

	// node-a's process dies without leaving: its heartbeat is fresh, but
	// gossip notices within seconds.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, in, "node-a dead by gossip and its replica on node-b", func() (bool, string) {
		n, err := client.Get[api.Node](ctx, c, api.Key{Name: "node-a"})
		if err != nil {
			return false, err.Error()
		}
		reps := replicasOf(t, c, "hello")
		return n.Status.State == api.NodeDead && len(reps) == 1 && reps[0].Spec.NodeName == "node-b",
			fmt.Sprintf("node-a %s, replicas %v", n.Status.State, reps)
	})
}
