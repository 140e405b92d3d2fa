package cli

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// LsOptions are the inputs of `surge ls`.
type LsOptions struct {
	Streams
	NewClient     clientFunc
	Now           func() time.Time
	Output        string
	AllNamespaces bool
}

func newLsCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &LsOptions{Streams: s, NewClient: newClient, Now: d.now}
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List functions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLs(cmd.Context(), o)
		},
	}
	addOutputFlag(c, &o.Output)
	c.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "list functions of every namespace")
	return c
}

func runLs(ctx context.Context, o *LsOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ns := c.Namespace()
	if o.AllNamespaces {
		ns = ""
	}
	list, err := client.List[api.Function](ctx, c, ns, nil)
	if err != nil {
		return describeAPIError("functions", ns, err)
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, list.Items)
	}
	scales, err := client.List[api.Scale](ctx, c, ns, nil)
	if err != nil {
		return describeAPIError("functions", ns, err)
	}
	type count struct{ ready, desired int32 }
	counts := map[api.Key]count{}
	for _, sc := range scales.Items {
		k := api.Key{Namespace: sc.Metadata.Namespace, Name: sc.Metadata.Labels[api.LabelFunction]}
		n := counts[k]
		n.ready += sc.Status.ReadyReplicas
		n.desired += sc.Spec.Replicas
		counts[k] = n
	}
	rps := loadByFunction(ctx, c)
	headers := []string{"NAME", "URL", "REVISION", "READY", "RPS", "IMAGE", "AGE"}
	if o.AllNamespaces {
		headers = append([]string{"NAMESPACE"}, headers...)
	}
	t := newTable(o.Out, headers...)
	now := o.Now()
	for _, f := range list.Items {
		k := api.KeyOf(&f)
		n := counts[k]
		rate := "-"
		if rps != nil {
			rate = strconv.FormatFloat(rps[k], 'f', -1, 64)
		}
		row := []string{f.Metadata.Name, f.Status.URL, f.Status.LatestRevision, fmt.Sprintf("%d/%d", n.ready, n.desired),
			rate, shortImage(f.Spec.Image), age(now, f.Metadata.CreationTimestamp)}
		if o.AllNamespaces {
			row = append([]string{f.Metadata.Namespace}, row...)
		}
		t.row(row...)
	}
	return t.flush()
}

// loadByFunction sums the gateways' requests per second by function; nil
// when the server does not say (an older one, or a token that may not).
func loadByFunction(ctx context.Context, c *client.Client) map[api.Key]float64 {
	var l api.List[api.RevisionRate]
	if err := c.Do(ctx, http.MethodGet, "/v1/stats", nil, &l); err != nil {
		return nil
	}
	out := map[api.Key]float64{}
	for _, r := range l.Items {
		out[api.Key{Namespace: r.Namespace, Name: r.Function}] += r.RPS
	}
	for k, v := range out {
		out[k] = math.Round(v*10) / 10
	}
	return out
}

// shortImage abbreviates an image's digest to 12 hex digits, enough to
// tell images apart in a table.
func shortImage(image string) string {
	ref, digest, ok := strings.Cut(image, "@")
	if !ok {
		return image
	}
	return ref + "@" + shortDigest(digest)
}

func concurrency(c int32) string {
	if c == 0 {
		return "unlimited"
	}
	return itoa(c)
}

// scaleRange writes a scaling policy's bounds as "0-10" or "2-∞".
func scaleRange(s api.ScalingPolicy) string {
	hi := "inf"
	if s.MaxScale > 0 {
		hi = itoa(s.MaxScale)
	}
	return itoa(s.MinScale) + "-" + hi
}
