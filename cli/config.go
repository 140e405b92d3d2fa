package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/client"
)

// ConfigOptions are the inputs of `surge config`'s verbs.
type ConfigOptions struct {
	Streams
	// Path is the client config file.
	Path string
	Name string
}

func newConfigCmd(s Streams, g *Globals) *cobra.Command {
	o := &ConfigOptions{Streams: s}
	c := &cobra.Command{
		Use:   "config",
		Short: "Show and choose the servers (contexts) of the client config",
		Long: `A client config file holds one server, as ` + "`surge up`" + ` writes it, or several,
each a named context (` + "`surge login`" + ` adds them). Every verb uses the current
context, or the one --context names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	use := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Make NAME the context every verb uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Path, o.Name = g.UserConfigPath(), args[0]
			return runUseContext(cmd.Context(), o)
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return contextNames(g.UserConfigPath()), cobra.ShellCompDirectiveNoFileComp
		},
	}
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Path = g.UserConfigPath()
			return runGetContexts(cmd.Context(), o)
		},
	}
	current := &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Path = g.UserConfigPath()
			return runCurrentContext(cmd.Context(), o)
		},
	}
	c.AddCommand(use, get, current)
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
	return c
}

// loadConfigFile reads the client config for a config verb, saying what to
// do when there is none.
func loadConfigFile(path string) (*client.File, error) {
	f, err := client.LoadFile(path)
	if errors.Is(err, client.ErrNoConfig) {
		return nil, fmt.Errorf("no client config at %s: start Surge with `surge up` (it writes one), or `surge login URL --token-file FILE`", path)
	}
	return f, err
}

func runUseContext(_ context.Context, o *ConfigOptions) error {
	f, err := loadConfigFile(o.Path)
	if err != nil {
		return err
	}
	if err := f.Use(o.Name); err != nil {
		return fmt.Errorf("context %q is not in %s: `surge config get-contexts` lists them", o.Name, o.Path)
	}
	if err := f.Save(o.Path); err != nil {
		return err
	}
	cfg, _ := f.Context(o.Name)
	fmt.Fprintf(o.Out, "context %q is current: %s\n", o.Name, cfg.Server)
	return nil
}

func runGetContexts(_ context.Context, o *ConfigOptions) error {
	f, err := loadConfigFile(o.Path)
	if err != nil {
		return err
	}
	current := f.CurrentContext
	if current == "" && len(f.Contexts) == 1 {
		current = f.Contexts[0].Name
	}
	t := newTable(o.Out, "CURRENT", "NAME", "SERVER", "NAMESPACE")
	for _, c := range f.Contexts {
		mark := " "
		if c.Name == current {
			mark = "*"
		}
		t.row(mark, c.Name, c.Server, c.Namespace)
	}
	return t.flush()
}

func runCurrentContext(_ context.Context, o *ConfigOptions) error {
	f, err := loadConfigFile(o.Path)
	if err != nil {
		return err
	}
	name := f.CurrentContext
	if name == "" && len(f.Contexts) == 1 {
		name = f.Contexts[0].Name
	}
	if name == "" {
		return fmt.Errorf("%s names no current context: `surge config use-context NAME` chooses one", o.Path)
	}
	fmt.Fprintln(o.Out, name)
	return nil
}

// contextNames lists the contexts of the config at path, for completion.
func contextNames(path string) []string {
	f, err := client.LoadFile(path)
	if err != nil {
		return nil
	}
	out := make([]string, len(f.Contexts))
	for i, c := range f.Contexts {
		out[i] = c.Name
	}
	return out
}
