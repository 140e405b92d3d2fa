package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
)

// ServerOptions are the inputs of `surge server` and `surge up`.
type ServerOptions struct {
	Streams
	Config   controlplane.Config
	LogLevel string
	Version  string
	// AllInOne prints the next commands to try once serving (`surge up`).
	AllInOne bool
	// OnReady, when set, is called once the API serves (tests use it).
	OnReady func(*controlplane.Server)
	// Agent configures the node agent of `surge up`.
	Agent AgentOptions

	cancel context.CancelFunc
}

func addServerFlags(c *cobra.Command, o *ServerOptions) {
	f := c.Flags()
	d := controlplane.DefaultConfig()
	f.StringVar(&o.Config.DataDir, "data-dir", d.DataDir, "where etcd, certificates, tokens and logs live")
	f.StringVar(&o.Config.APIAddr, "api-addr", d.APIAddr, "HTTPS API listen address")
	f.StringSliceVar(&o.Config.EtcdEndpoints, "etcd-endpoints", nil, "use this external etcd cluster instead of the embedded one")
	f.StringVar(&o.Config.EtcdClientAddr, "etcd-client-addr", d.EtcdClientAddr, "embedded etcd's client listen address (TLS, client certificates)")
	f.StringVar(&o.Config.EtcdPeerAddr, "etcd-peer-addr", d.EtcdPeerAddr, "embedded etcd's peer listen address (TLS, client certificates)")
	f.StringVar(&o.Config.Name, "name", "", "this server's member name (default: the host name)")
	f.StringSliceVar(&o.Config.TLSSANs, "tls-san", nil, "extra host names or IPs for the API certificate")
}

func newServerCmd(s Streams, g *globals) *cobra.Command {
	o := &ServerOptions{Streams: s, Version: g.version}
	c := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane server: API and etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.logLevel
			o.Config.UserConfigPath = userConfigPath(g)
			return runServer(cmd.Context(), o)
		},
	}
	addServerFlags(c, o)
	return c
}

func newUpCmd(s Streams, g *globals) *cobra.Command {
	o := &ServerOptions{Streams: s, Version: g.version, AllInOne: true}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run all of Surge on this machine",
		Long: `Up runs every role of Surge in one process on this machine: etcd, the API
server and, as they land, the node agent, gateway and autoscaler. It writes a
client config so that the other verbs work at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.logLevel
			o.Config.UserConfigPath = userConfigPath(g)
			return runServer(cmd.Context(), o)
		},
	}
	addServerFlags(c, o)
	addAgentFlags(c, &o.Agent, false)
	return c
}

func userConfigPath(g *globals) string {
	if g.configPath != "" {
		return g.configPath
	}
	return client.DefaultConfigPath()
}

func newLogger(w *os.File, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runServer(ctx context.Context, o *ServerOptions) error {
	if o.Config.DataDir != "" && !filepath.IsAbs(o.Config.DataDir) {
		abs, err := filepath.Abs(o.Config.DataDir)
		if err != nil {
			return err
		}
		o.Config.DataDir = abs
	}
	o.Config.WriteUserConfig = true
	errw, ok := o.Err.(*os.File)
	if !ok {
		errw = os.Stderr
	}
	log, err := newLogger(errw, o.LogLevel)
	if err != nil {
		return err
	}
	srv, err := controlplane.New(o.Config, log, o.Version)
	if err != nil {
		return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	ctx, o.cancel = context.WithCancel(ctx)
	defer o.cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-srv.Ready():
	}
	if o.OnReady != nil {
		o.OnReady(srv)
	}
	agentDone := make(chan error, 1)
	if o.AllInOne {
		admin := srv.AdminConfig()
		ao := o.Agent
		ao.Streams, ao.LogLevel = o.Streams, o.LogLevel
		ao.Client = client.Config{Server: admin.Server, CertificateAuthority: admin.CertificateAuthority, Token: srv.JoinToken()}
		ao.StateDir = agentStateDir(o.Config.DataDir)
		go func() { agentDone <- runAgent(ctx, &ao) }()
	}
	if o.AllInOne {
		fmt.Fprintf(o.Out, `Surge is up. API: %s   data: %s
Client config: %s

Try:
  surge deploy hello --image example.test/hello:v1
  surge ls
  surge describe hello

Press Ctrl-C to stop.
`, srv.AdminConfig().Server, o.Config.DataDir, o.Config.UserConfigPath)
	} else {
		fmt.Fprintf(o.Out, "Surge server is up. API: %s\nJoin a node agent with:\n  surge agent --api %s --token %s --ca-file %s\n",
			srv.AdminConfig().Server, srv.AdminConfig().Server, srv.JoinToken(), filepath.Join(o.Config.DataDir, "pki", "ca.crt"))
	}
	select {
	case err := <-done:
		return err
	case err := <-agentDone:
		// The agent failing takes the all-in-one down with a clear reason,
		// rather than leaving a cluster that cannot run anything.
		if ctx.Err() == nil {
			o.cancel()
			<-done
			return fmt.Errorf("node agent: %w", err)
		}
		return <-done
	}
}
