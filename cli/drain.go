package cli

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// DrainOptions are the inputs of `surge drain`.
type DrainOptions struct {
	Streams
	NewClient clientFunc
	Node      string
	// Wait bounds the wait for the node to be empty; the drain itself goes
	// on in the control plane after it.
	Wait time.Duration
	// Poll is how often the wait looks; 0 means every 250ms.
	Poll time.Duration
}

func newDrainCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &DrainOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move a node's replicas elsewhere, each stopped only once its replacement is Ready",
		Long: "Cordon the node and move its replicas to other nodes: the control plane starts a replacement of each\n" +
			"elsewhere and stops the old one only once the replacement is Ready, so that no request fails.\n" +
			"The node stays cordoned afterwards; `surge uncordon NODE` takes it back.",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodes(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node = args[0]
			return runDrain(cmd.Context(), o)
		},
	}
	c.Flags().DurationVar(&o.Wait, "timeout", 5*time.Minute, "how long to wait for the node to be empty")
	return c
}

func runDrain(ctx context.Context, o *DrainOptions) error {
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	if _, err := setNodeSpec(ctx, c, o.Node, func(s *api.NodeSpec) { s.Unschedulable, s.Drain = true, true }); err != nil {
		return err
	}
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	started := false
	moved := map[string]bool{} // the replicas seen on the node, and whether they left
	var last string            // why the drain waits, as last seen
	for {
		left, why, err := drainState(wctx, c, o.Node)
		switch {
		case err != nil && wctx.Err() == nil:
			last = "the API: " + err.Error()
		case err == nil:
			if !started {
				fmt.Fprintf(o.Out, "node %q cordoned; draining %d replicas\n", o.Node, len(left))
				started = true
			}
			for _, r := range left {
				if _, seen := moved[r]; !seen {
					moved[r] = false
				}
			}
			for _, r := range slices.Sorted(maps.Keys(moved)) {
				if !moved[r] && !slices.Contains(left, r) {
					moved[r] = true
					fmt.Fprintf(o.Out, "replica %s moved\n", r)
				}
			}
			if len(left) == 0 {
				fmt.Fprintf(o.Out, "node %q drained: %d replicas moved\n", o.Node, len(moved))
				return nil
			}
			last = why
			if strings.HasPrefix(why, "no node fits") {
				return fmt.Errorf("node %q: %d replicas cannot move: their replacements find no node (%s): add a node or uncordon one; "+
					"the node stays cordoned and draining until `surge uncordon %s`", o.Node, len(left), why, o.Node)
			}
		}
		select {
		case <-tick.C:
			continue
		case <-wctx.Done():
		}
		if last != "" {
			last = " (" + last + ")"
		}
		if ctx.Err() != nil {
			return fmt.Errorf("node %q: stopped waiting with %d replicas still on it%s; the drain goes on in the control plane", o.Node, countFalse(moved), last)
		}
		return fmt.Errorf("node %q: %d replicas still on it after %s%s; the drain goes on: run `surge drain %s` again to wait, or `surge uncordon %s` to stop it",
			o.Node, countFalse(moved), o.Wait, last, o.Node, o.Node)
	}
}

// drainState lists the replicas still on node (those not yet stopped),
// and why the drain waits for them: the message of a replacement that
// waits (an unbound replica of one of their revisions), if any.
func drainState(ctx context.Context, c *client.Client, node string) (left []string, why string, err error) {
	on, err := client.List[api.Replica](ctx, c, "", url.Values{"node": {node}})
	if err != nil {
		return nil, "", err
	}
	revs := map[api.Key]bool{}
	for _, r := range on.Items {
		if r.Spec.NodeName != node || r.Status.Phase == api.ReplicaTerminating || r.Status.Phase == api.ReplicaFailed {
			continue
		}
		name := r.Metadata.Name
		if r.Metadata.Namespace != api.DefaultNamespace {
			name = r.Metadata.Namespace + "/" + name
		}
		left = append(left, name)
		revs[api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision}] = true
	}
	if len(left) > 0 {
		unbound, err := client.List[api.Replica](ctx, c, "", url.Values{"node": {""}})
		if err != nil {
			return nil, "", err
		}
		for _, r := range unbound.Items {
			if r.Spec.NodeName == "" && r.Status.Message != "" && revs[api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision}] {
				why = r.Status.Message
				break
			}
		}
	}
	slices.Sort(left)
	return left, why, nil
}

func countFalse(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if !v {
			n++
		}
	}
	return n
}
