package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// RolloutStatusOptions are the inputs of `surge rollout status`.
type RolloutStatusOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	Output    string
	Name      string
	// Watch follows the rollout until it ends, a line per change.
	Watch bool
	// Poll is how often Watch looks; 0 is every 500ms.
	Poll time.Duration
}

func newRolloutCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "rollout",
		Short: "Follow a function's rollout: surge rollout status NAME [-w]",
	}
	o := &RolloutStatusOptions{Streams: s, NewClient: newClient, Now: d.now, Poll: d.poll}
	status := &cobra.Command{
		Use:   "status NAME [-w]",
		Short: "Show how a function's latest rollout goes: its canary's step, the last comparison, why it was rolled back",
		Long: `Rollout status shows a function's latest traffic change: the revision that
takes the traffic and the one it replaces, the canary's step, the last
comparison of their error rates and p99 latencies from the gateways, and, for a
rollout rolled back, why. With -w it follows a canary until it ends, a line per
change, and fails if it is rolled back. Canaries run on the server: stopping
this command stops nothing.`,
		Example:           `  surge rollout status hello -w`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runRolloutStatus(cmd.Context(), o)
		},
	}
	status.Flags().BoolVarP(&o.Watch, "watch", "w", false, "follow the rollout until it ends")
	addOutputFlag(status, &o.Output)
	c.AddCommand(status)
	wrapArgs(status)
	return c
}

func runRolloutStatus(ctx context.Context, o *RolloutStatusOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	if o.Watch && o.Output != outTable {
		return usagef("-w prints a line per change: it takes no -o")
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ro, err := getRollout(ctx, c, o.Name)
	if err != nil {
		return err
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, ro)
	}
	if err := printRollout(o.Out, ro, o.Now()); err != nil {
		return err
	}
	if !o.Watch {
		return nil
	}
	_, err = followRollout(ctx, c, o.Out, o.Name, ro, o.Poll, o.Now)
	return err
}

// getRollout reads function name's rollout, with the errors a user reads.
func getRollout(ctx context.Context, c *client.Client, name string) (*api.Rollout, error) {
	ro, err := client.Get[api.Rollout](ctx, c, api.Key{Namespace: c.Namespace(), Name: name})
	if errors.Is(err, api.ErrNotFound) {
		if _, ferr := client.Get[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: name}); ferr != nil {
			return nil, describeAPIError("function", name, ferr)
		}
		return nil, fmt.Errorf("function %q has had no rollout: its first revision took the traffic when it was deployed", name)
	}
	if err != nil {
		return nil, describeAPIError("function", name, err)
	}
	return ro, nil
}

// printRollout writes a rollout as `surge rollout status` shows it.
func printRollout(w io.Writer, ro *api.Rollout, now time.Time) error {
	kv := newTable(w, "Function:", ro.Metadata.Name)
	kv.row("Revision:", ro.Spec.Revision)
	if ro.Spec.From != "" {
		kv.row("From:", ro.Spec.From)
	}
	switch {
	case ro.Spec.Rollback:
		kv.row("Strategy:", "rollback: all the traffic at once")
	case ro.Spec.Canary != nil:
		kv.row("Strategy:", "canary "+ro.Spec.Canary.String())
	default:
		kv.row("Strategy:", "all the traffic at once")
	}
	kv.row("Phase:", phaseLine(ro))
	if !ro.Status.Started.IsZero() {
		kv.row("Started:", ro.Status.Started.Format(time.RFC3339)+" ("+age(now, ro.Status.Started)+" ago)")
	}
	if !ro.Status.Finished.IsZero() {
		kv.row("Finished:", ro.Status.Finished.Format(time.RFC3339)+" (took "+roundDuration(ro.Status.Finished.Sub(ro.Status.Started))+")")
	}
	if a := ro.Status.Analysis; a != nil {
		kv.row("Last check:", analysisLine(ro, a))
	}
	if ro.Status.Reason != "" {
		kv.row("Reason:", ro.Status.Reason)
	}
	return kv.flush()
}

// phaseLine says where a rollout is, in a few words.
func phaseLine(ro *api.Rollout) string {
	st := ro.Status
	switch {
	case st.Phase == api.RolloutProgressing && ro.Spec.Canary != nil:
		return fmt.Sprintf("Progressing: %d%% of the traffic, step %d of %d", st.Percent, st.Step+1, len(ro.Spec.Canary.Steps))
	case st.Phase == api.RolloutRolledBack:
		return fmt.Sprintf("RolledBack: all the traffic back on %s", ro.Spec.From)
	case st.Phase == api.RolloutAborted:
		return fmt.Sprintf("Aborted at %d%%: the traffic stays as set by hand", st.Percent)
	case st.Phase == api.RolloutSucceeded:
		return fmt.Sprintf("Succeeded: all the traffic on %s", ro.Spec.Revision)
	}
	return string(st.Phase)
}

// analysisLine is a rollout's last comparison of its two revisions.
func analysisLine(ro *api.Rollout, a *api.RolloutAnalysis) string {
	side := func(rev string, h api.RevisionHealth) string {
		s := fmt.Sprintf("%s %d requests, %d errors", rev, h.Requests, h.Errors)
		if h.Requests > 0 {
			s += fmt.Sprintf(" (%.1f%%), p99 %s", 100*h.ErrorRate(), roundDuration(h.P99.Duration))
		}
		return s
	}
	return side(ro.Spec.Revision, a.Canary) + "; " + side(ro.Spec.From, a.Baseline)
}

// followRollout prints a line for each change of function name's
// rollout, from ro on, until it ends: nil when its revision took the
// traffic, an error saying why when it was rolled back or left as set by
// hand. A rollout replaced by another (a deploy, a rollback) is followed
// on. It reads the rollout every poll; the canary runs on the server,
// whatever becomes of this.
func followRollout(ctx context.Context, c *client.Client, w io.Writer, name string, ro *api.Rollout, poll time.Duration, now func() time.Time) (*api.Rollout, error) {
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	last := ""
	for {
		line := phaseLine(ro)
		if a := ro.Status.Analysis; a != nil {
			line += ". " + analysisLine(ro, a)
		}
		if line != last {
			fmt.Fprintf(w, "%s %s: %s\n", now().Format("15:04:05"), ro.Spec.Revision, line)
			last = line
		}
		switch ro.Status.Phase {
		case api.RolloutSucceeded:
			return ro, nil
		case api.RolloutRolledBack:
			return ro, fmt.Errorf("function %q: %s was rolled back: %s; all the traffic is on %s", name, ro.Spec.Revision, ro.Status.Reason, ro.Spec.From)
		case api.RolloutAborted:
			return ro, fmt.Errorf("function %q: the canary of %s ended at %d%%: %s", name, ro.Spec.Revision, ro.Status.Percent, ro.Status.Reason)
		}
		select {
		case <-ctx.Done():
			return ro, fmt.Errorf("function %q: stopped following the rollout of %s, which goes on on the server: `surge rollout status %s -w` follows it again", name, ro.Spec.Revision, name)
		case <-t.C:
		}
		next, err := client.Get[api.Rollout](ctx, c, api.Key{Namespace: c.Namespace(), Name: name})
		switch {
		case err == nil:
			ro = next
		case errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden):
			return ro, describeAPIError("function", name, err)
		}
		// Other errors (a server failing over) are looked at again.
	}
}
