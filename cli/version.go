package cli

import (
	"context"
	"fmt"
	"net/http"
	"runtime"

	"github.com/spf13/cobra"
)

// VersionOptions are the inputs of `surge version`.
type VersionOptions struct {
	Streams
	NewClient  clientFunc
	Version    string
	ClientOnly bool
}

func newVersionCmd(s Streams, g *Globals) *cobra.Command {
	o := &VersionOptions{Streams: s, NewClient: g.newClient, Version: g.version}
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, and the server's when one answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVersion(cmd.Context(), o)
		},
	}
	c.Flags().BoolVar(&o.ClientOnly, "client", false, "print only the client's version")
	return c
}

func runVersion(ctx context.Context, o *VersionOptions) error {
	fmt.Fprintf(o.Out, "client: %s (%s, %s/%s)\n", o.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if o.ClientOnly {
		return nil
	}
	c, err := o.NewClient()
	if err != nil {
		fmt.Fprintf(o.Out, "server: unknown (%v)\n", err)
		return nil
	}
	var v struct{ Version string }
	if err := c.Do(ctx, http.MethodGet, "/v1/version", nil, &v); err != nil {
		fmt.Fprintf(o.Out, "server: unknown (%s)\n", oneLine(err))
		return nil
	}
	fmt.Fprintf(o.Out, "server: %s (%s)\n", v.Version, c.Server())
	return nil
}
