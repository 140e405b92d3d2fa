package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// NodesOptions are the inputs of `surge nodes`.
type NodesOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	Output    string
}

func newNodesCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &NodesOptions{Streams: s, NewClient: newClient, Now: time.Now}
	c := &cobra.Command{
		Use:   "nodes",
		Short: "List the nodes, their state, subnet, capacity and replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNodes(cmd.Context(), o)
		},
	}
	addOutputFlag(c, &o.Output)
	return c
}

func runNodes(ctx context.Context, o *NodesOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	nodes, err := client.List[api.Node](ctx, c, "", nil)
	if err != nil {
		return describeAPIError("nodes", "", err)
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, nodes.Items)
	}
	reps, err := client.List[api.Replica](ctx, c, "", nil)
	if err != nil {
		return describeAPIError("replicas", "", err)
	}
	count := map[string]int32{}
	for _, r := range reps.Items {
		count[r.Spec.NodeName]++
	}
	now := o.Now()
	t := newTable(o.Out, "NAME", "STATE", "ADDRESS", "SUBNET", "CPU", "MEMORY", "REPLICAS", "LAST SEEN", "AGE")
	for _, n := range nodes.Items {
		state := string(n.Status.State)
		if n.Spec.Unschedulable {
			state += ",cordoned"
		}
		seen := ""
		if !n.Status.LastSeen.IsZero() {
			seen = age(now, n.Status.LastSeen) + " ago"
		}
		t.row(n.Metadata.Name, state, n.Status.Address, n.Spec.PodSubnet, n.Status.Allocatable.CPU, n.Status.Allocatable.Memory,
			itoa(count[n.Metadata.Name]), seen, age(now, n.Metadata.CreationTimestamp))
	}
	return t.flush()
}
