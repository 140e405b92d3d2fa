package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// RmOptions are the inputs of `surge rm`.
type RmOptions struct {
	Streams
	NewClient clientFunc
	Names     []string
}

func newRmCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &RmOptions{Streams: s, NewClient: newClient}
	return &cobra.Command{
		Use:               "rm NAME...",
		Aliases:           []string{"delete"},
		Short:             "Delete functions with their revisions, traffic and replicas",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeFunctionsAny(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Names = args
			return runRm(cmd.Context(), o)
		},
	}
}

func runRm(ctx context.Context, o *RmOptions) error {
	for _, n := range o.Names {
		if err := api.ValidateName(n); err != nil {
			return fmt.Errorf("function %q: name %s", n, api.NameRule)
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	for _, n := range o.Names {
		if err := client.Delete[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: n}); err != nil {
			return describeAPIError("function", n, err)
		}
		fmt.Fprintf(o.Out, "function %q deleted\n", n)
	}
	return nil
}
