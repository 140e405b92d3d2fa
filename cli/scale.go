package cli

import (
	"maps"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newScaleCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &DeployOptions{Streams: s, NewClient: newClient, Flags: scaleFlagOf, Now: d.now, TTY: isTerminal(s.Err)}
	c := &cobra.Command{
		Use:   "scale NAME [--min N] [--max N] [--target N] [--metric concurrency|rps] [--scale-to-zero-grace D]",
		Short: "Set a function's autoscaling policy",
		Long: `Scale changes how the autoscaler sizes a function: the bounds, the target per
replica and the metric. Like every spec change it makes a new revision, which
takes the traffic once a replica of it is Ready (as Knative does for its
autoscaling annotations).`,
		Example: `  surge scale hello --min 1 --max 20
  surge scale hello --target 50 --metric rps`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			o.Set = map[string]bool{}
			// Its own flags only: --api or --config change nothing.
			cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				if !f.Changed {
					return
				}
				switch f.Name {
				case "min":
					o.Set["min-scale"] = true
				case "max":
					o.Set["max-scale"] = true
				case "wait-timeout", "no-wait":
					// how to wait, not what to change
				default:
					o.Set[f.Name] = true
				}
			})
			if len(o.Set) == 0 {
				return usagef("surge scale %s: give at least one of --min, --max, --target, --metric, --scale-to-zero-grace", o.Name)
			}
			o.Set["exists"] = true
			return runDeploy(cmd.Context(), o)
		},
	}
	c.Flags().Int32Var(&o.MinScale, "min", 0, "fewest replicas, even when idle (0 allows scale to zero)")
	c.Flags().Int32Var(&o.MaxScale, "max", 0, "most replicas; 0 = no limit")
	addScalingFlags(c, o)
	addWaitFlags(c, o)
	return c
}

// scaleFlagOf is flagOf with surge scale's names for the bounds.
var scaleFlagOf = func() map[string]string {
	m := maps.Clone(flagOf)
	m["spec.scaling.minScale"] = "--min"
	m["spec.scaling.maxScale"] = "--max"
	return m
}()
