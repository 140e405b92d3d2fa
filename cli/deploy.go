package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// DeployOptions are the inputs of `surge deploy`.
type DeployOptions struct {
	Streams
	NewClient clientFunc

	Name string
	// Set holds the flags the user gave; only those change the spec of an
	// existing function.
	Set         map[string]bool
	Image       string
	Env         []string
	Port        int32
	Concurrency int32
	MinScale    int32
	MaxScale    int32
	CPU         string
	Memory      string
	Timeout     api.Duration
	Target      float64
	Metric      string
	Grace       api.Duration
	Window      api.Duration
	// Flags maps spec fields to the flags that set them, for errors: nil
	// for deploy's (flagOf); surge scale names its own --min and --max.
	Flags map[string]string
	// Wait is how long to wait for a new revision to have a Ready replica
	// and take the traffic; 0 returns once the revision is made.
	Wait time.Duration
	// Poll is how often the wait looks; 0 means every 250ms.
	Poll time.Duration
}

// describeError is describeAPIError with the command's own flag names.
func (o *DeployOptions) describeError(err error) error {
	flags := o.Flags
	if flags == nil {
		flags = flagOf
	}
	return describeAPIErrorFlags("function", o.Name, err, flags)
}

func newDeployCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &DeployOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:   "deploy NAME [--image REF] [flags]",
		Short: "Create a function, or change it: each change makes a new revision",
		Long: `Deploy creates the function NAME, or updates it with the flags given (the
others keep their values). A change makes a new immutable revision NAME-0000N;
all traffic moves to it once one of its replicas is Ready, and until then stays
on the revision before, so a revision that cannot start (an image that does not
pull, a crash at start-up) takes none. Deploy waits for that (--wait-timeout)
and says why a revision is not Ready. Deploying the same thing twice changes
nothing.`,
		Example: `  surge deploy hello --image registry.example/hello:v1
  surge deploy hello --env GREETING=hi --concurrency 10
  surge deploy hello --env GREETING-          # remove a variable`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			o.Set = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { o.Set[f.Name] = true })
			return runDeploy(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Image, "image", "", "image reference (required for a new function)")
	f.StringArrayVarP(&o.Env, "env", "e", nil, "environment variable K=V; K- removes it (repeatable)")
	f.Int32Var(&o.Port, "port", 0, "port the function listens on, passed as $PORT (default 8080)")
	f.Int32Var(&o.Concurrency, "concurrency", 0, "requests one replica serves at once; 0 = no limit")
	f.Int32Var(&o.MinScale, "min-scale", 0, "fewest replicas, even when idle (0 allows scale to zero)")
	f.Int32Var(&o.MaxScale, "max-scale", 0, "most replicas; 0 = no limit")
	f.StringVar(&o.CPU, "cpu", "", "CPU per replica, e.g. 250m or 1 (default 100m)")
	f.StringVar(&o.Memory, "memory", "", "memory per replica, e.g. 128Mi or 1Gi (default 128Mi)")
	f.Var(durationFlag{&o.Timeout}, "timeout", "request timeout, e.g. 30s (default 5m)")
	addScalingFlags(c, o)
	addWaitFlags(c, o)
	return c
}

// addWaitFlags adds the flags of the wait for a new revision, which deploy
// and scale share.
func addWaitFlags(c *cobra.Command, o *DeployOptions) {
	var noWait bool
	f := c.Flags()
	f.DurationVar(&o.Wait, "wait-timeout", 2*time.Minute, "how long to wait for the new revision to be Ready and take the traffic")
	f.BoolVar(&noWait, "no-wait", false, "return once the revision is made, without waiting for it to be Ready")
	c.PreRunE = func(*cobra.Command, []string) error {
		if o.Wait < 0 {
			return usagef("--wait-timeout %s: must not be negative", o.Wait)
		}
		if noWait {
			o.Wait = 0
		}
		return nil
	}
}

// addScalingFlags adds the autoscaling knobs deploy and scale share.
func addScalingFlags(c *cobra.Command, o *DeployOptions) {
	f := c.Flags()
	f.Float64Var(&o.Target, "target", 0, "metric value one replica should carry; 0 = 70% of --concurrency, or 100")
	f.StringVar(&o.Metric, "metric", "", "what the autoscaler targets: concurrency (default) or rps")
	f.Var(durationFlag{&o.Grace}, "scale-to-zero-grace", "keep the last replica this long after the last request, e.g. 5m; default: learned per function")
	f.Var(durationFlag{&o.Window}, "window", "autoscaler stable window, e.g. 60s: shorter follows load faster and flaps more")
}

// durationFlag is a flag that sets an api.Duration, such as "30s" or
// "2m"; "" sets zero, the field's default.
type durationFlag struct{ d *api.Duration }

var _ pflag.Value = durationFlag{}

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	if s == "" {
		f.d.Duration = 0
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New(api.DurationRule)
	}
	f.d.Duration = d
	return nil
}

func (durationFlag) Type() string { return "duration" }

// applyEnv applies K=V and K- edits to an env list, keeping its order.
func applyEnv(env []api.EnvVar, edits []string) ([]api.EnvVar, error) {
	out := slices.Clone(env)
	for _, e := range edits {
		if k, ok := strings.CutSuffix(e, "-"); ok && k != "" && !strings.Contains(e, "=") {
			out = slices.DeleteFunc(out, func(v api.EnvVar) bool { return v.Name == k })
			continue
		}
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, usagef("--env %q: want NAME=VALUE, or NAME- to remove it", e)
		}
		if i := slices.IndexFunc(out, func(ev api.EnvVar) bool { return ev.Name == k }); i >= 0 {
			out[i].Value = v
		} else {
			out = append(out, api.EnvVar{Name: k, Value: v})
		}
	}
	return out, nil
}

func runDeploy(ctx context.Context, o *DeployOptions) error {
	if err := api.ValidateName(o.Name); err != nil {
		return fmt.Errorf("function %q: name %s", o.Name, api.NameRule)
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	// The flags are edits of the stored spec: when the function changed
	// between the read and the write (a rollout ending writes its status),
	// read it again and apply them again.
	var cur, out *api.Function
	for attempt := 1; ; attempt++ {
		cur, out, err = deployOnce(ctx, c, o)
		if !errors.Is(err, api.ErrConflict) {
			break
		}
		if attempt == 3 {
			return fmt.Errorf("function %q changed while deploying: run the deploy again", o.Name)
		}
	}
	if err != nil {
		return err
	}
	rev := out.Status.LatestRevision
	verb := "updated"
	switch {
	case cur == nil:
		verb = "created"
	case rev == cur.Status.LatestRevision:
		verb = "unchanged"
	}
	if out.Status.LatestReadyRevision == rev {
		if verb == "unchanged" {
			fmt.Fprintf(o.Out, "function %q unchanged: revision %s\n", o.Name, rev)
		} else {
			fmt.Fprintf(o.Out, "function %q %s: revision %s takes all traffic\n", o.Name, verb, rev)
		}
		return nil
	}
	if o.Wait == 0 {
		fmt.Fprintf(o.Out, "function %q %s: revision %s takes all traffic once a replica is Ready\n", o.Name, verb, rev)
		return nil
	}
	// An unchanged deploy of a revision still rolling out waits too: a
	// retried deploy must not succeed where the first one failed.
	if err := waitRollout(ctx, c, o, rev); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "function %q %s: revision %s takes all traffic\n", o.Name, verb, rev)
	return nil
}

// deployOnce reads the function, applies o's flags to its spec and writes
// it back, conditional on what it read. It returns the function as read
// (nil when new) and as written.
func deployOnce(ctx context.Context, c *client.Client, o *DeployOptions) (cur, out *api.Function, err error) {
	fn := &api.Function{Metadata: api.ObjectMeta{Name: o.Name, Namespace: c.Namespace()}}
	cur, err = client.Get[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: o.Name})
	switch {
	case err == nil:
		fn.Spec = cur.Spec
		fn.Metadata.Labels = cur.Metadata.Labels
		fn.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
	case errors.Is(err, api.ErrNotFound):
		cur = nil
		if o.Set["exists"] {
			return nil, nil, fmt.Errorf("function %q not found: `surge ls` lists them", o.Name)
		}
		if !o.Set["image"] {
			return nil, nil, usagef("function %q does not exist yet: --image is required to create it", o.Name)
		}
	default:
		return nil, nil, o.describeError(err)
	}
	s := &fn.Spec
	if o.Set["image"] {
		s.Image = o.Image
	}
	if s.Env, err = applyEnv(s.Env, o.Env); err != nil {
		return nil, nil, err
	}
	setIf(o.Set["port"], &s.Port, o.Port)
	setIf(o.Set["concurrency"], &s.Concurrency, o.Concurrency)
	setIf(o.Set["min-scale"], &s.Scaling.MinScale, o.MinScale)
	setIf(o.Set["max-scale"], &s.Scaling.MaxScale, o.MaxScale)
	setIf(o.Set["cpu"], &s.Resources.CPU, o.CPU)
	setIf(o.Set["memory"], &s.Resources.Memory, o.Memory)
	setIf(o.Set["timeout"], &s.Timeout, o.Timeout)
	setIf(o.Set["target"], &s.Scaling.Target, o.Target)
	setIf(o.Set["metric"], &s.Scaling.Metric, o.Metric)
	setIf(o.Set["scale-to-zero-grace"], &s.Scaling.ScaleToZeroGrace, o.Grace)
	setIf(o.Set["window"], &s.Scaling.StableWindow, o.Window)
	// Check here first, with the server's own rules, so that a typo costs
	// no round trip; the server checks again.
	api.SetDefaults(s)
	if err := api.ValidateFunction(fn); err != nil {
		var fe api.FieldErrors
		errors.As(err, &fe)
		return nil, nil, o.describeError(api.Invalid(api.KindFunction, o.Name, fe))
	}
	out, err = c.PutFunction(ctx, fn)
	if errors.Is(err, api.ErrConflict) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, o.describeError(err)
	}
	return cur, out, nil
}

// waitRollout waits until rev is the function's latest ready revision (a
// replica of it is Ready and the traffic moved to it), for at most o.Wait.
// What the replicas of rev report on the way (a pull that fails, a crash)
// goes to o.Err, each message once, so that a deploy that cannot succeed
// says why long before the wait ends. An error of the API is retried until
// then, unless it is final (the function gone, the token refused).
func waitRollout(ctx context.Context, c *client.Client, o *DeployOptions, rev string) error {
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	seen := map[string]bool{}
	var last string // the latest message of a replica of rev, or of the API
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		fn, err := client.Get[api.Function](wctx, c, api.Key{Namespace: c.Namespace(), Name: o.Name})
		switch {
		case err == nil && fn.Status.LatestReadyRevision == rev:
			return nil
		case err == nil && fn.Status.LatestRevision != rev:
			return fmt.Errorf("function %q: revision %s was deployed while waiting for %s", o.Name, fn.Status.LatestRevision, rev)
		case errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden):
			return o.describeError(err)
		case err != nil && wctx.Err() == nil:
			last = "the API: " + err.Error()
		}
		reps, err := client.List[api.Replica](wctx, c, c.Namespace(), url.Values{"function": {o.Name}})
		if err == nil {
			for _, r := range reps.Items {
				if r.Spec.Revision != rev || r.Status.Message == "" {
					continue
				}
				last = fmt.Sprintf("replica %s: %s", r.Metadata.Name, r.Status.Message)
				if !seen[r.Status.Message] {
					seen[r.Status.Message] = true
					fmt.Fprintf(o.Err, "waiting for %s: %s\n", rev, last)
				}
			}
		}
		select {
		case <-tick.C:
			continue
		case <-wctx.Done():
		}
		why := ""
		if last != "" {
			why = " (" + last + ")"
		}
		// Where the traffic is meanwhile, read afresh: ctx may be done.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		stays := trafficNow(rctx, c, o.Name, rev)
		rcancel()
		if ctx.Err() != nil {
			return fmt.Errorf("function %q: stopped waiting for revision %s, which has no Ready replica yet%s; %s", o.Name, rev, why, stays)
		}
		return fmt.Errorf("function %q: revision %s has no Ready replica after %s%s; %s (surge describe %s shows more)", o.Name, rev, o.Wait, why, stays, o.Name)
	}
}

// trafficNow says where fn's traffic is while rev rolls out.
func trafficNow(ctx context.Context, c *client.Client, fn, rev string) string {
	tr, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: c.Namespace(), Name: fn})
	if err != nil {
		return "the traffic stays where it was"
	}
	var on []string
	for _, t := range tr.Spec.Targets {
		switch {
		case t.Percent <= 0:
		case t.Revision == rev && t.Percent == 100:
			return "requests to it wait for a Ready replica"
		case t.Percent == 100:
			on = append(on, t.Revision)
		default:
			on = append(on, fmt.Sprintf("%s (%d%%)", t.Revision, t.Percent))
		}
	}
	if len(on) == 0 {
		return "the function has no traffic"
	}
	return "the traffic stays on " + strings.Join(on, ", ")
}

func setIf[T any](set bool, dst *T, v T) {
	if set {
		*dst = v
	}
}

// itoa writes an int32 for a table cell.
func itoa(v int32) string { return strconv.FormatInt(int64(v), 10) }
