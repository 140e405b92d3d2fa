package cli

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// RevisionsOptions are the inputs of `surge revisions`.
type RevisionsOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	Output    string
	Name      string
}

func newRevisionsCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &RevisionsOptions{Streams: s, NewClient: newClient, Now: d.now}
	c := &cobra.Command{
		Use:               "revisions NAME",
		Short:             "List a function's revisions, the image each runs and the traffic each receives",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runRevisions(cmd.Context(), o)
		},
	}
	addOutputFlag(c, &o.Output)
	return c
}

func runRevisions(ctx context.Context, o *RevisionsOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ns := c.Namespace()
	if _, err := client.Get[api.Function](ctx, c, api.Key{Namespace: ns, Name: o.Name}); err != nil {
		return describeAPIError("function", o.Name, err)
	}
	q := url.Values{"function": {o.Name}}
	revs, err := client.List[api.Revision](ctx, c, ns, q)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, revs.Items)
	}
	traffic, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: ns, Name: o.Name})
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	scales, err := client.List[api.Scale](ctx, c, ns, q)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	share := map[string]int32{}
	for _, t := range traffic.Spec.Targets {
		share[t.Revision] = t.Percent
	}
	desired := map[string]int32{}
	for _, s := range scales.Items {
		desired[s.Metadata.Name] = s.Spec.Replicas
	}
	t := newTable(o.Out, "NAME", "TRAFFIC", "IMAGE", "REPLICAS", "AGE")
	now := o.Now()
	// Newest first, as users look for the latest.
	for i := len(revs.Items) - 1; i >= 0; i-- {
		r := revs.Items[i]
		t.row(r.Metadata.Name, strconv.Itoa(int(share[r.Metadata.Name]))+"%", shortImage(r.Spec.Image()),
			itoa(desired[r.Metadata.Name]), age(now, r.Metadata.CreationTimestamp))
	}
	return t.flush()
}
