package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TrafficOptions are the inputs of `surge traffic`.
type TrafficOptions struct {
	Streams
	NewClient clientFunc
	Output    string
	Name      string
	// Shares are the REV=PERCENT arguments, as given; none shows the
	// traffic.
	Shares []string
}

func newTrafficCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &TrafficOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:   "traffic NAME [REV=PERCENT]... [@latest=PERCENT]",
		Short: "Show or split a function's traffic between its revisions",
		Long: `Traffic shows which revisions of a function take its requests, with their tags,
or sets the split: each REV=PERCENT gives a revision its share, and the shares
add up to 100. REV is a revision's name (hello-00002), a tag of the function's
(surge tag), or @latest, its latest Ready revision. Revisions left out take no
traffic; their tags stay, and a tagged revision answers at its own host
whatever its share. A split set while a canary rolls out ends the canary, and
stays as set.`,
		Example: `  surge traffic hello
  surge traffic hello hello-00001=90 hello-00002=10
  surge traffic hello @latest=100`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Shares = args[0], args[1:]
			return runTraffic(cmd.Context(), o)
		},
	}
	addOutputFlag(c, &o.Output)
	return c
}

func runTraffic(ctx context.Context, o *TrafficOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	key := api.Key{Namespace: c.Namespace(), Name: o.Name}
	fn, err := client.Get[api.Function](ctx, c, key)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	tr, err := client.Get[api.Traffic](ctx, c, key)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	if len(o.Shares) > 0 {
		shares, err := parseShares(fn, tr, o.Shares)
		if err != nil {
			return err
		}
		tr.Spec.Targets = api.Split(tr, shares)
		if tr, err = putTraffic(ctx, c, tr); err != nil {
			return err
		}
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, tr)
	}
	return printTraffic(o.Out, fn, tr)
}

// parseShares reads REV=PERCENT arguments against the function's
// revisions' names, tags and @latest. The server checks that the
// revisions exist.
func parseShares(fn *api.Function, tr *api.Traffic, args []string) (map[string]int32, error) {
	name := fn.Metadata.Name
	shares := map[string]int32{}
	sum := int32(0)
	for _, a := range args {
		ref, pct, ok := strings.Cut(a, "=")
		p, err := strconv.ParseInt(strings.TrimSuffix(pct, "%"), 10, 32)
		if !ok || err != nil || p < 0 || p > 100 {
			return nil, usagef("%q: want REV=PERCENT, a revision and a whole percentage from 0 to 100, e.g. %s=10", a, api.RevisionName(name, 1))
		}
		rev, err := resolveRevision(fn, tr, ref)
		if err != nil {
			return nil, err
		}
		if _, dup := shares[rev]; dup {
			return nil, usagef("%s is given twice", rev)
		}
		shares[rev] = int32(p)
		sum += int32(p)
	}
	if sum != 100 {
		return nil, usagef("the percentages add up to %d: they must add up to 100", sum)
	}
	return shares, nil
}

// resolveRevision reads a revision of fn as a user names it: its name,
// @latest (the latest Ready revision), or a tag of tr.
func resolveRevision(fn *api.Function, tr *api.Traffic, ref string) (string, error) {
	name := fn.Metadata.Name
	switch {
	case ref == "@latest":
		if fn.Status.LatestReadyRevision == "" {
			return "", fmt.Errorf("function %q has no Ready revision yet for @latest", name)
		}
		return fn.Status.LatestReadyRevision, nil
	case api.Tagged(tr, ref) != "":
		return api.Tagged(tr, ref), nil
	}
	if f, _, ok := api.ParseRevisionName(ref); !ok || f != name {
		return "", usagef("%q is not a revision of %q (such as %s), a tag of its, or @latest: `surge revisions %s` lists them",
			ref, name, api.RevisionName(name, 1), name)
	}
	return ref, nil
}

// putTraffic writes t, naming what the server refuses.
func putTraffic(ctx context.Context, c *client.Client, t *api.Traffic) (*api.Traffic, error) {
	var out api.Traffic
	err := c.Do(ctx, "PUT", client.ObjectPath[api.Traffic](api.KeyOf(t)), t, &out)
	if errors.Is(err, api.ErrConflict) {
		return nil, fmt.Errorf("function %q: its traffic changed while this command ran (a rollout step?): run it again", t.Metadata.Name)
	}
	if err != nil {
		return nil, describeAPIError("traffic of", t.Metadata.Name, err)
	}
	return &out, nil
}

// printTraffic writes t as a table: each revision's share, its tag and
// the tag's URL.
func printTraffic(w io.Writer, fn *api.Function, t *api.Traffic) error {
	// TAG and URL only where some revision has a tag.
	tagged := newTagColumn(t)
	cells := func(c ...string) []string {
		if tagged {
			return c
		}
		return c[:2]
	}
	tb := newTable(w, cells("REVISION", "TRAFFIC", "TAG", "URL")...)
	for _, tt := range t.Spec.Targets {
		tb.row(cells(tt.Revision, fmt.Sprintf("%d%%", tt.Percent), tt.Tag, tagURL(fn.Status.URL, tt.Tag))...)
	}
	return tb.flush()
}

// tagURL is where a tag answers, from the function's URL: its first
// host label, NAME, becomes TAG-NAME. "" without a URL or a tag.
func tagURL(fnURL, tag string) string {
	u, err := url.Parse(fnURL)
	if tag == "" || fnURL == "" || err != nil || u.Host == "" {
		return ""
	}
	u.Host = tag + "-" + u.Host
	return u.String()
}

// TagOptions are the inputs of `surge tag` and `surge untag`.
type TagOptions struct {
	Streams
	NewClient clientFunc
	Name      string
	// Revision is what Tag names (a revision, @latest or another tag);
	// empty removes Tag.
	Revision string
	Tag      string
}

func newTagCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &TagOptions{Streams: s, NewClient: newClient}
	return &cobra.Command{
		Use:   "tag NAME REV TAG",
		Short: "Give a revision a tag: it answers at TAG-NAME.DOMAIN whatever its share of the traffic",
		Long: `Tag names one revision of a function, which then answers at its own host,
TAG-NAME.DOMAIN (TAG-NAME.NAMESPACE.DOMAIN outside the default namespace), as
Knative's traffic tags do: try a revision before it takes traffic, or keep the
old one at hand. A tag moves from the revision it named before, and a
revision has one tag, which a new one replaces. A tagged
revision is not scaled to zero for want of traffic, nor pruned; surge untag
lets it go.`,
		Example: `  surge tag hello hello-00003 next
  curl http://next-hello.surge.localhost:8080/
  surge tag hello @latest stable`,
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Revision, o.Tag = args[0], args[1], args[2]
			return runTag(cmd.Context(), o)
		},
	}
}

func newUntagCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &TagOptions{Streams: s, NewClient: newClient}
	return &cobra.Command{
		Use:               "untag NAME TAG",
		Short:             "Remove a tag of a function's revision",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Tag = args[0], args[1]
			return runTag(cmd.Context(), o)
		},
	}
}

func runTag(ctx context.Context, o *TagOptions) error {
	if err := api.ValidateName(o.Tag); err != nil {
		return usagef("tag %q %s", o.Tag, api.NameRule)
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	key := api.Key{Namespace: c.Namespace(), Name: o.Name}
	fn, err := client.Get[api.Function](ctx, c, key)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	tr, err := client.Get[api.Traffic](ctx, c, key)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	had := api.Tagged(tr, o.Tag)
	rev := ""
	if o.Revision != "" {
		if rev, err = resolveRevision(fn, tr, o.Revision); err != nil {
			return err
		}
	} else if had == "" {
		return fmt.Errorf("function %q has no tag %q: `surge traffic %s` shows its tags", o.Name, o.Tag, o.Name)
	}
	targets := slices.Clone(tr.Spec.Targets)
	for i := range targets {
		if targets[i].Tag == o.Tag {
			targets[i].Tag = ""
		}
	}
	replaced := ""
	if rev != "" {
		// A revision is named once in the traffic, so it has one tag.
		i := slices.IndexFunc(targets, func(t api.TrafficTarget) bool { return t.Revision == rev })
		if i < 0 {
			targets = append(targets, api.TrafficTarget{Revision: rev})
			i = len(targets) - 1
		}
		replaced, targets[i].Tag = targets[i].Tag, o.Tag
	}
	// Targets with neither share nor tag go (api.Split keeps the rest).
	tr.Spec.Targets = targets
	tr.Spec.Targets = api.Split(tr, api.SharesOf(tr))
	if _, err := putTraffic(ctx, c, tr); err != nil {
		return err
	}
	switch {
	case rev == "":
		fmt.Fprintf(o.Out, "function %q: tag %q removed from %s\n", o.Name, o.Tag, had)
		return nil
	case replaced != "":
		fmt.Fprintf(o.Out, "function %q: %s tagged %q instead of %q\n", o.Name, rev, o.Tag, replaced)
	default:
		fmt.Fprintf(o.Out, "function %q: %s tagged %q\n", o.Name, rev, o.Tag)
	}
	if u := tagURL(fn.Status.URL, o.Tag); u != "" {
		fmt.Fprintln(o.Out, u)
	}
	return nil
}
