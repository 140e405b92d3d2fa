package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// LogsOptions are the inputs of `surge logs`.
type LogsOptions struct {
	Streams
	NewClient clientFunc
	Name      string
	Follow    bool
	Replica   string
	Revision  string
	// Tail, when above zero, prints only each replica's last Tail lines.
	Tail int
}

func newLogsCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &LogsOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:               "logs NAME [-f] [--revision REV] [--replica R] [--tail N]",
		Short:             "Print a function's logs, from every replica (each line prefixed with it)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runLogs(cmd.Context(), o)
		},
	}
	c.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new lines")
	c.Flags().StringVar(&o.Replica, "replica", "", "only this replica")
	c.Flags().StringVar(&o.Revision, "revision", "", "only the replicas of this revision")
	c.Flags().IntVar(&o.Tail, "tail", 0, "only the last N lines of each replica (not with -f)")
	_ = c.RegisterFlagCompletionFunc("replica", completeReplicas(newClient))
	_ = c.RegisterFlagCompletionFunc("revision", completeRevisions(newClient))
	return c
}

func runLogs(ctx context.Context, o *LogsOptions) error {
	if o.Tail < 0 || (o.Tail > 0 && o.Follow) {
		return usagef("--tail %d: want a positive number of lines, without -f", o.Tail)
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ns := c.Namespace()
	if _, err := client.Get[api.Function](ctx, c, api.Key{Namespace: ns, Name: o.Name}); err != nil {
		return describeAPIError("function", o.Name, err)
	}
	reps, err := client.List[api.Replica](ctx, c, ns, url.Values{"function": {o.Name}})
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	var targets []api.Replica
	for _, r := range reps.Items {
		if (o.Replica == "" || r.Metadata.Name == o.Replica) && (o.Revision == "" || r.Spec.Revision == o.Revision) && r.Spec.NodeName != "" {
			targets = append(targets, r)
		}
	}
	if len(targets) == 0 {
		return fmt.Errorf("function %q has no running replica to read logs from", o.Name)
	}
	// Followed logs interleave as they come; the others are printed one
	// replica after the other, in order.
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	bufs := make([]bytes.Buffer, len(targets))
	for i, r := range targets {
		// Through the API, which fetches the log from the replica's node
		// agent: the token goes to the API and nowhere else.
		path := client.ObjectPath[api.Replica](api.Key{Namespace: ns, Name: r.Metadata.Name}) + "/log"
		if o.Follow {
			path += "?follow=true"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := c.Open(ctx, path)
			if err != nil {
				errs[i] = fmt.Errorf("replica %s: %w", r.Metadata.Name, err)
				return
			}
			defer body.Close()
			var lines io.Reader = body
			if o.Tail > 0 {
				var b strings.Builder
				for _, l := range lastLines(body, o.Tail) {
					b.WriteString(l + "\n")
				}
				lines = strings.NewReader(b.String())
			}
			var w io.Writer = &bufs[i]
			if o.Follow {
				w = o.Out
			}
			prefixLines(lines, w, &mu, len(targets) > 1, r.Metadata.Name)
		}()
	}
	wg.Wait()
	for i := range bufs {
		_, _ = bufs[i].WriteTo(o.Out)
	}
	for _, err := range errs {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// prefixLines copies lines to w, each prefixed with the replica's name when
// several replicas are interleaved.
func prefixLines(r io.Reader, w io.Writer, mu *sync.Mutex, prefix bool, name string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mu.Lock()
		switch {
		case prefix && sc.Text() == "":
			fmt.Fprintf(w, "[%s]\n", name)
		case prefix:
			fmt.Fprintf(w, "[%s] %s\n", name, sc.Text())
		default:
			fmt.Fprintln(w, sc.Text())
		}
		mu.Unlock()
	}
}

// lastLines reads r to its end and returns its last n lines.
func lastLines(r io.Reader, n int) []string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ring := make([]string, 0, n)
	for sc.Scan() {
		if len(ring) == n {
			copy(ring, ring[1:])
			ring = ring[:n-1]
		}
		ring = append(ring, sc.Text())
	}
	return ring
}

// logTail returns the last n lines of a replica's log, read through the
// API (which fetches it from the node's agent), within a few seconds.
func logTail(ctx context.Context, c *client.Client, r *api.Replica, n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if r.Spec.NodeName == "" {
		return nil, fmt.Errorf("replica %s runs on no node", r.Metadata.Name)
	}
	body, err := c.Open(ctx, client.ObjectPath[api.Replica](api.KeyOf(r))+"/log")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return lastLines(body, n), nil
}
