package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// RollbackOptions are the inputs of `surge rollback`.
type RollbackOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	TTY       bool
	Name      string
	// To is the revision to go back to; empty is the one before the
	// function's latest rollout.
	To string
	// Wait is how long to wait for a revision woken from zero to have a
	// Ready replica; 0 does not wait.
	Wait time.Duration
	// Poll is how often the wait looks; 0 is every 250ms.
	Poll time.Duration
}

func newRollbackCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &RollbackOptions{Streams: s, NewClient: newClient, Now: d.now, TTY: isTerminal(s.Err), Poll: d.poll}
	var noWait bool
	c := &cobra.Command{
		Use:   "rollback NAME [--to REV]",
		Short: "Move all of a function's traffic back to the revision before, or to --to REV, at once",
		Long: `Rollback moves all of a function's traffic, at once, to the revision that had it
before the latest rollout (a deploy, a canary, a rollback), or to the revision
--to names, keeping the tags. A canary in progress ends there. A revision at
zero replicas is asked for one first, and requests wait in the gateways for it
as they do for any function woken from zero; rollback waits until it is Ready
(--wait-timeout), or not (--no-wait).`,
		Example: `  surge rollback hello
  surge rollback hello --to hello-00003`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if o.Wait < 0 {
				return usagef("--wait-timeout %s: must not be negative", o.Wait)
			}
			if noWait {
				o.Wait = 0
			}
			return runRollback(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.To, "to", "", "the revision to move the traffic to (default: the one before the latest rollout)")
	c.Flags().DurationVar(&o.Wait, "wait-timeout", 2*time.Minute, "how long to wait for a revision at zero to have a Ready replica")
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the traffic moved, without waiting for a replica")
	_ = c.RegisterFlagCompletionFunc("to", completeRevisions(newClient))
	return c
}

func runRollback(ctx context.Context, o *RollbackOptions) error {
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	to := o.To
	if to != "" {
		// A tag or @latest, as surge traffic takes them.
		fn, err := client.Get[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: o.Name})
		if err != nil {
			return describeAPIError("function", o.Name, err)
		}
		tr, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: c.Namespace(), Name: o.Name})
		if err != nil {
			return describeAPIError("function", o.Name, err)
		}
		if to, err = resolveRevision(fn, tr, to); err != nil {
			return err
		}
	}
	var out api.RollbackResponse
	path := client.ObjectPath[api.Rollout](api.Key{Namespace: c.Namespace(), Name: o.Name}) + "/rollback"
	if err := c.Do(ctx, "POST", path, &api.RollbackRequest{Revision: to}, &out); err != nil {
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Code == 404 && ae.Field == "":
			return describeAPIError("function", o.Name, err)
		case errors.As(err, &ae) && (ae.Code == 404 || ae.Code == 409):
			return errors.New(ae.Message) // says which function, and what to do
		}
		return describeAPIError("function", o.Name, err)
	}
	ro := out.Rollout
	from := ""
	if ro.Spec.From != "" {
		from = " (it was on " + ro.Spec.From + ")"
	}
	fmt.Fprintf(o.Out, "function %q rolled back: %s takes all traffic%s\n", o.Name, ro.Spec.Revision, from)
	if !out.Activated {
		return nil
	}
	if o.Wait == 0 {
		fmt.Fprintf(o.Out, "%s was at zero replicas: requests wait for its first one\n", ro.Spec.Revision)
		return nil
	}
	return waitReady(ctx, c, o, ro.Spec.Revision)
}

// waitReady waits, for at most o.Wait, until revision rev has a Ready
// replica.
func waitReady(ctx context.Context, c *client.Client, o *RollbackOptions, rev string) error {
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	p := newProgress(o.Err, now, o.TTY)
	p.start("%s was at zero replicas: waiting for one to be Ready", rev)
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		sc, err := client.Get[api.Scale](wctx, c, api.Key{Namespace: c.Namespace(), Name: rev})
		if err == nil && sc.Status.ReadyReplicas > 0 {
			p.end(rev + " is Ready")
			return nil
		}
		select {
		case <-t.C:
			continue
		case <-wctx.Done():
		}
		p.fail()
		return fmt.Errorf("function %q: the traffic is on %s, which has no Ready replica after %s: requests wait for one; `surge describe %s` says why",
			o.Name, rev, o.Wait, o.Name)
	}
}
