package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// CordonOptions are the inputs of `surge cordon` and `surge uncordon`.
type CordonOptions struct {
	Streams
	NewClient clientFunc
	Node      string
	// Uncordon makes the node schedulable again (and ends a drain).
	Uncordon bool
}

func newCordonCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &CordonOptions{Streams: s, NewClient: newClient}
	return &cobra.Command{
		Use:               "cordon NODE",
		Short:             "Stop placing new replicas on a node; those it runs stay",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodes(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node = args[0]
			return runCordon(cmd.Context(), o)
		},
	}
}

func newUncordonCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &CordonOptions{Streams: s, NewClient: newClient, Uncordon: true}
	return &cobra.Command{
		Use:               "uncordon NODE",
		Short:             "Place new replicas on a node again (ends a drain)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodes(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node = args[0]
			return runCordon(cmd.Context(), o)
		},
	}
}

func runCordon(ctx context.Context, o *CordonOptions) error {
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	changed, err := setNodeSpec(ctx, c, o.Node, func(s *api.NodeSpec) {
		s.Unschedulable = !o.Uncordon
		if o.Uncordon {
			s.Drain = false
		}
	})
	if err != nil {
		return err
	}
	what := "cordoned"
	if o.Uncordon {
		what = "uncordoned"
	}
	if !changed {
		what = "already " + what
	}
	fmt.Fprintf(o.Out, "node %q %s\n", o.Node, what)
	return nil
}

// setNodeSpec changes a node's spec with edit, as a compare-and-swap on
// the node that it retries when the node changed in between (its agent
// rewrites the status now and then). changed is false when edit changed
// nothing, and nothing was written.
func setNodeSpec(ctx context.Context, c *client.Client, name string, edit func(*api.NodeSpec)) (changed bool, _ error) {
	if err := api.ValidateName(name); err != nil {
		return false, fmt.Errorf("node %q: name %s", name, api.NameRule)
	}
	for {
		n, err := client.Get[api.Node](ctx, c, api.Key{Name: name})
		if err != nil {
			return false, describeNodeError(name, err)
		}
		before := n.Spec
		edit(&n.Spec)
		if n.Spec == before {
			return false, nil
		}
		err = c.Do(ctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: name}), n, nil)
		if errors.Is(err, api.ErrConflict) {
			continue
		}
		if err != nil {
			return false, describeNodeError(name, err)
		}
		return true, nil
	}
}

// describeNodeError is describeAPIError for a node.
func describeNodeError(name string, err error) error {
	if errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("node %q not found: `surge nodes` lists them", name)
	}
	return describeAPIError("node", name, err)
}
