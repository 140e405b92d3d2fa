package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"sync"

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
}

func newLogsCmd(s Streams, newClient clientFunc) *cobra.Command {
	o := &LogsOptions{Streams: s, NewClient: newClient}
	c := &cobra.Command{
		Use:   "logs NAME [-f] [--replica R]",
		Short: "Print a function's logs, from every replica (each line prefixed with it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runLogs(cmd.Context(), o)
		},
	}
	c.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new lines")
	c.Flags().StringVar(&o.Replica, "replica", "", "only this replica")
	return c
}

func runLogs(ctx context.Context, o *LogsOptions) error {
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ns := c.Namespace()
	reps, err := client.List[api.Replica](ctx, c, ns, url.Values{"function": {o.Name}})
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	var targets []api.Replica
	for _, r := range reps.Items {
		if (o.Replica == "" || r.Metadata.Name == o.Replica) && r.Spec.NodeName != "" {
			targets = append(targets, r)
		}
	}
	if len(targets) == 0 {
		return fmt.Errorf("function %q has no running replica to read logs from", o.Name)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
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
			prefixLines(body, o.Out, &mu, len(targets) > 1, r.Metadata.Name)
		}()
	}
	wg.Wait()
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
		if prefix {
			fmt.Fprintf(w, "[%s] %s\n", name, sc.Text())
		} else {
			fmt.Fprintln(w, sc.Text())
		}
		mu.Unlock()
	}
}
