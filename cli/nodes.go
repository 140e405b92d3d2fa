package cli

import (
	"context"
	"fmt"
	"slices"
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
	// Names, when set, lists only these nodes.
	Names []string
}

func newNodesCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &NodesOptions{Streams: s, NewClient: newClient, Now: d.now}
	c := &cobra.Command{
		Use:               "nodes [NAME...]",
		Short:             "List the nodes, their state, subnet, capacity and replicas",
		ValidArgsFunction: completeNodes(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Names = args
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
	if len(o.Names) > 0 {
		kept := nodes.Items[:0]
		for _, n := range nodes.Items {
			if slices.Contains(o.Names, n.Metadata.Name) {
				kept = append(kept, n)
			}
		}
		for _, name := range o.Names {
			if !slices.ContainsFunc(kept, func(n api.Node) bool { return n.Metadata.Name == name }) {
				return fmt.Errorf("node %q not found: `surge nodes` lists them", name)
			}
		}
		nodes.Items = kept
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
		switch {
		case n.Spec.Drain:
			state += ",draining"
		case n.Spec.Unschedulable:
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
