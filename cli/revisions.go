package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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
	c.AddCommand(newRevisionsRmCmd(s, newClient))
	return c
}

// RevisionsRmOptions are the inputs of `surge revisions rm`.
type RevisionsRmOptions struct {
	Streams
	NewClient clientFunc
	Names     []string
}

func newRevisionsRmCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &RevisionsRmOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:   "rm REV...",
		Short: "Delete revisions that take no traffic, have no tag and no rollout may go back to",
		Long: `Revisions rm deletes old revisions with their replicas. The server refuses, saying
why, a revision that takes traffic or has a tag, the function's latest, and
the two revisions of its latest rollout (where a rollback goes). A function's
keepRevisions (surge deploy --keep N) deletes the oldest of them by itself.`,
		Example:           `  surge revisions rm hello-00001 hello-00002`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeRevisions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Names = args
			return runRevisionsRm(cmd.Context(), o)
		},
	}
	wrapArgs(c)
	return c
}

func runRevisionsRm(ctx context.Context, o *RevisionsRmOptions) error {
	for _, n := range o.Names {
		if _, _, ok := api.ParseRevisionName(n); !ok {
			return usagef("%q is not a revision name like hello-00001: `surge revisions NAME` lists them", n)
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	for _, n := range o.Names {
		err := client.Delete[api.Revision](ctx, c, api.Key{Namespace: c.Namespace(), Name: n})
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Code == http.StatusNotFound:
			fn, _, _ := api.ParseRevisionName(n)
			return fmt.Errorf("revision %q not found: `surge revisions %s` lists them", n, fn)
		case errors.As(err, &ae):
			return errors.New(ae.Message)
		case err != nil:
			return err
		}
		fmt.Fprintf(o.Out, "revision %q deleted\n", n)
	}
	return nil
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
	share, tag := map[string]int32{}, map[string]string{}
	for _, t := range traffic.Spec.Targets {
		share[t.Revision], tag[t.Revision] = t.Percent, t.Tag
	}
	desired := map[string]int32{}
	for _, s := range scales.Items {
		desired[s.Metadata.Name] = s.Spec.Replicas
	}
	// A TAG column only where some revision has one.
	tagged := newTagColumn(traffic)
	t := newTable(o.Out, tagged.headers("NAME", "TRAFFIC", "TAG", "IMAGE", "REPLICAS", "AGE")...)
	now := o.Now()
	// Newest first, as users look for the latest.
	for i := len(revs.Items) - 1; i >= 0; i-- {
		r := revs.Items[i]
		t.row(tagged.cells(r.Metadata.Name, strconv.Itoa(int(share[r.Metadata.Name]))+"%", tag[r.Metadata.Name], shortImage(r.Spec.Image()),
			itoa(desired[r.Metadata.Name]), age(now, r.Metadata.CreationTimestamp))...)
	}
	return t.flush()
}

// tagColumn is whether a table shows the TAG column, its third: only when
// a revision of the traffic has a tag.
type tagColumn bool

func newTagColumn(t *api.Traffic) tagColumn {
	return tagColumn(t != nil && slices.ContainsFunc(t.Spec.Targets, func(tt api.TrafficTarget) bool { return tt.Tag != "" }))
}

// headers and cells drop the third column unless shown.
func (c tagColumn) headers(h ...string) []string { return c.cells(h...) }

func (c tagColumn) cells(v ...string) []string {
	if c {
		return v
	}
	return append(v[:2:2], v[3:]...)
}
