package cli

import (
	"context"
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

func newLsCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &LsOptions{Streams: s, NewClient: newClient, Now: time.Now}
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
	headers := []string{"NAME", "REVISION", "IMAGE", "PORT", "CONCURRENCY", "SCALE", "AGE"}
	if o.AllNamespaces {
		headers = append([]string{"NAMESPACE"}, headers...)
	}
	t := newTable(o.Out, headers...)
	now := o.Now()
	for _, f := range list.Items {
		row := []string{f.Metadata.Name, f.Status.LatestRevision, f.Spec.Image, itoa(f.Spec.Port),
			concurrency(f.Spec.Concurrency), scaleRange(f.Spec.Scaling), age(now, f.Metadata.CreationTimestamp)}
		if o.AllNamespaces {
			row = append([]string{f.Metadata.Namespace}, row...)
		}
		t.row(row...)
	}
	return t.flush()
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
