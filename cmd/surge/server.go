package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/gateway"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/internal/telemetry"
	"github.com/surgeplatform/surge/nodeagent"
)

// ServerOptions are the inputs of `surge server` and `surge up`.
type ServerOptions struct {
	cli.Streams
	Config   controlplane.Config
	LogLevel string
	Version  string
	// AllInOne prints the next commands to try once serving (`surge up`).
	AllInOne bool
	// OnReady, when set, is called once the API serves (tests use it).
	OnReady func(*controlplane.Server)
	// Agent configures the node agent of `surge up`.
	Agent AgentOptions
	// Gateway configures the gateway of `surge up`.
	Gateway GatewayOptions
	// Self is how the user invoked this binary, for the commands printed.
	Self string
	// MetricsAddr is surge up's --metrics-addr: the one address that
	// serves every role's metrics.
	MetricsAddr string
}

func addServerFlags(c *cobra.Command, o *ServerOptions) {
	f := c.Flags()
	d := controlplane.DefaultConfig()
	f.StringVar(&o.Config.DataDir, "data-dir", d.DataDir, "where etcd, certificates, tokens and logs live")
	f.StringVar(&o.Config.APIAddr, "api-addr", d.APIAddr, "HTTPS API listen address")
	f.StringSliceVar(&o.Config.EtcdEndpoints, "etcd-endpoints", nil, "use this external etcd cluster instead of the embedded one")
	f.StringVar(&o.Config.EtcdCAFile, "etcd-cafile", "", "with --etcd-endpoints: PEM of the CA the etcd servers' certificates chain to")
	f.StringVar(&o.Config.EtcdCertFile, "etcd-certfile", "", "with --etcd-endpoints: PEM client certificate to present to etcd")
	f.StringVar(&o.Config.EtcdKeyFile, "etcd-keyfile", "", "with --etcd-endpoints: PEM key of --etcd-certfile")
	f.StringVar(&o.Config.EtcdClientAddr, "etcd-client-addr", d.EtcdClientAddr, "embedded etcd's client listen address (TLS, client certificates)")
	f.StringVar(&o.Config.EtcdPeerAddr, "etcd-peer-addr", d.EtcdPeerAddr, "embedded etcd's peer address, where the other servers reach it (mutual TLS; default: --api-addr's host, port 7072)")
	f.StringVar(&o.Config.Name, "name", "", "this server's member name (default: the host name)")
	f.StringSliceVar(&o.Config.TLSSANs, "tls-san", nil, "extra host names or IPs for the API certificate")
	f.StringVar(&o.Config.PodCIDR, "pod-cidr", d.PodCIDR, "replica addresses; each node gets a /24 of it")
	f.StringVar(&o.Config.GatewayURL, "gateway-url", "", "the gateways' URL as clients reach them, e.g. http://surge.example.com: functions are at NAME.HOST (surge up: http://DOMAIN:PORT of its gateway)")
}

func newServerCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &ServerOptions{Streams: s, Version: g.Version()}
	c := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane server: API and etcd",
		Long: `Server runs a control-plane server: the API and registry on an embedded etcd
member (or --etcd-endpoints), and, when elected, the controllers and the
autoscaler. The first server of a cluster makes its CA and tokens. More
servers join it with --join-server, presenting its DATA_DIR/server-token
(--token-file) over TLS checked against its CA (--ca-file): each receives the CA,
its key and the tokens, and becomes an etcd member. Three servers keep
serving when any one fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			o.Config.UserConfigPath = g.UserConfigPath()
			if err := joinFlags(cmd, g, &o.Config); err != nil {
				return err
			}
			return runServer(cmd.Context(), o)
		},
	}
	addServerFlags(c, o)
	c.Flags().StringVar(&o.Config.GossipAddr, "gossip-addr", "0.0.0.0:7945", "where the server gossips, to hear of dead nodes at once (\"\" for none)")
	c.Flags().StringSliceVar(&o.Config.GossipJoin, "join", nil, "gossip addresses of cluster members (HOST:PORT)")
	c.Flags().StringVar(&o.Config.JoinServer, "join-server", "", "at the first start, join the cluster of the server whose API is at this URL (with --token-file: its server-token, and --ca-file: its pki/ca.crt)")
	return c
}

// joinFlags reads what --join-server needs from the global flags:
// --token-file (or SURGE_TOKEN), the joined server's server-token, and
// --ca-file, the cluster CA.
func joinFlags(cmd *cobra.Command, g *cli.Globals, c *controlplane.Config) error {
	if c.JoinServer == "" {
		return nil
	}
	tok, err := g.FlagToken()
	if err != nil {
		return err
	}
	c.JoinServerToken = tok
	if f := cmd.Flag("ca-file"); f != nil && f.Value.String() != "" {
		b, err := os.ReadFile(f.Value.String())
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		c.JoinServerCA = b
	}
	return nil
}

func newUpCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &ServerOptions{Streams: s, Version: g.Version(), AllInOne: true, Self: selfName()}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run all of Surge on this machine",
		Long: `Up runs every role of Surge in one process on this machine: embedded etcd,
the API server and registry, the controllers and autoscaler, a node agent and
a gateway. It writes a client config so that the other verbs work at once.

The gateway serves HTTP on --gateway-addr (:8080) and HTTPS on --tls-addr
(:8443), with certificates for *.DOMAIN and *.NAMESPACE.DOMAIN from a
gateway CA of its own (DATA_DIR/pki/gateway-ca.crt), made as functions
appear; surge up prints how to trust it.

Stopping it (Ctrl-C, SIGTERM) stops every replica it runs, unless
--keep-replicas: then the next surge up on the same data dir adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			o.Config.UserConfigPath = g.UserConfigPath()
			return runServer(cmd.Context(), o)
		},
	}
	addServerFlags(c, o)
	addAgentFlags(c, &o.Agent, false)
	addGatewayFlags(c, &o.Gateway)
	addMetricsFlag(c, &o.MetricsAddr, defaultAgentMetricsAddr)
	addGatewayTLSFlags(c, &o.Gateway.TLS, true)
	return c
}

func newLogger(w *os.File, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Usagef("--log-level %q: want debug, info, warn or error", level)
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
	log, err := newLogger(stderrFile(o.Err), o.LogLevel)
	if err != nil {
		return err
	}
	if o.AllInOne {
		o.Config.GossipAddr = "127.0.0.1:0" // the agent and gateway join it
		// The node's network first: a machine without the CNI plugins, or
		// a bridge another agent holds, fails here, before the server
		// starts.
		ao := o.Agent
		ao.StateDir = agentStateDir(o.Config.DataDir)
		claim, err := nodeagent.ClaimNetwork(agentOptions(&ao, log))
		if err != nil {
			return agentError(err, " and --pod-cidr")
		}
		defer claim.Release()
		o.Agent.claim, o.Agent.stopReplicas = claim, true
		if o.Config.GatewayURL == "" {
			o.Config.GatewayURL = "http://" + cmp.Or(o.Gateway.Domain, gateway.DefaultConfig().Domain) + portOf(cmp.Or(o.Gateway.Addr, gateway.DefaultConfig().Addr))
		}
	}
	// One registry per role, and the process's: the API's /metrics serves
	// the server's with the process's; surge up's metrics address serves
	// them all.
	process, serverReg := telemetry.NewProcessRegistry(o.Version), prometheus.NewRegistry()
	o.Config.Registerer, o.Config.Gatherer = serverReg, prometheus.Gatherers{process, serverReg}
	agentReg, gatewayReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	if o.AllInOne && o.MetricsAddr != "" {
		// What discovery lists for the server: the one address, when a
		// scraper of the API's discovery reaches it.
		o.Config.MetricsURL = advertisedMetricsURL(o.MetricsAddr, "https://"+o.Config.APIAddr)
	}
	srv, err := controlplane.New(o.Config, log, o.Version)
	if err != nil {
		return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	// surge up's HTTPS: the gateway CA signs its certificates.
	var issuer gateway.CertIssuer
	if o.AllInOne && o.Gateway.TLS.Addr != "" {
		if issuer, err = newGatewayIssuer(o.Config.DataDir, cmp.Or(o.Gateway.Domain, gateway.DefaultConfig().Domain), clock.Real()); err != nil {
			return err
		}
	}
	// The roles run together: the first to fail stops the others, so a
	// half-working all-in-one never looks healthy. The server stops last,
	// after the agent and gateway have drained.
	serverCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	done := make(chan error, 1)
	go func() { done <- srv.Run(serverCtx) }()
	select {
	case err := <-done:
		return err
	case <-srv.Ready():
	case <-ctx.Done():
		stopServer()
		return <-done
	}
	if o.OnReady != nil {
		o.OnReady(srv)
	}
	admin := srv.AdminConfig()
	roles, rctx := errgroup.WithContext(ctx)
	if o.AllInOne {
		m, err := listenMetrics(o.MetricsAddr, prometheus.Gatherers{process, serverReg, agentReg, gatewayReg}, *admin)
		if err != nil {
			stopServer()
			<-done
			return err
		}
		metricsURL, metricsLine := "", ""
		if m != nil {
			metricsURL, metricsLine = m.url, "   metrics: "+telemetry.URL(m.ln.Addr().String())
			roles.Go(func() error {
				defer m.close()
				return wrap("metrics", m.e.Serve(rctx, m.ln))
			})
		}
		ao := o.Agent
		ao.metrics, ao.metricsURL = agentReg, metricsURL
		ao.Streams, ao.LogLevel = o.Streams, o.LogLevel
		ao.Client = client.Config{Server: admin.Server, CertificateAuthority: admin.CertificateAuthority, Token: srv.JoinToken()}
		ao.StateDir = agentStateDir(o.Config.DataDir)
		ao.Join = []string{srv.GossipAddr()}
		// Replicas call other functions through this gateway, over HTTP
		// or HTTPS.
		for _, addr := range []string{o.Gateway.Addr, o.Gateway.TLS.Addr} {
			if _, p, err := net.SplitHostPort(addr); err == nil {
				if port, err := strconv.ParseUint(p, 10, 16); err == nil {
					ao.GatewayPorts = append(ao.GatewayPorts, uint(port))
				}
			}
		}
		roles.Go(func() error { return wrap("node agent", runAgent(rctx, &ao)) })
		gwo := o.Gateway
		gwo.Streams, gwo.LogLevel = o.Streams, o.LogLevel
		gwo.Client = client.Config{Server: admin.Server, CertificateAuthority: admin.CertificateAuthority, Token: srv.GatewayToken()}
		gwo.GossipAddr, gwo.Join = "127.0.0.1:0", []string{ao.GossipAddr}
		gwo.metricsURL = metricsURL
		https := ""
		if gwo.TLS.Addr != "" {
			domain := cmp.Or(gwo.Domain, gateway.DefaultConfig().Domain)
			gwo.TLS.issuer = issuer
			ca := filepath.Join(o.Config.DataDir, "pki", "gateway-ca.crt")
			https = fmt.Sprintf("HTTPS: https://NAME.%s%s, certificates from the gateway CA %s (for *.%s only); trust it:\n  curl --cacert %s https://hi.%s%s/\n",
				domain, portOf(gwo.TLS.Addr), ca, domain, ca, domain, portOf(gwo.TLS.Addr))
		}
		roles.Go(func() error { return wrap("gateway", runGateway(rctx, &gwo, gatewayReg)) })
		fmt.Fprintf(o.Out, `Surge is up. API: %s   gateway: %s%s   data: %s
Client config (admin token): %s
Tokens (files, mode 0600): join %s   gateway %s
%s
Try:
  %s init hi && cd hi && %s deploy
  %s invoke hi

Press Ctrl-C to stop%s.
`, admin.Server, o.Config.GatewayURL, metricsLine, o.Config.DataDir, o.Config.UserConfigPath, tokenPath(o, controlplane.JoinTokenFile),
			tokenPath(o, controlplane.GatewayTokenFile), https, o.Self, relSelf(o.Self), relSelf(o.Self), stopNote(o.Agent.KeepReplicas))
	} else {
		ca := filepath.Join(o.Config.DataDir, "pki", "ca.crt")
		join := ""
		if a := srv.GossipAddr(); a != "" {
			join = " --join " + a
		}
		joinToken, gatewayToken := tokenPath(o, controlplane.JoinTokenFile), tokenPath(o, controlplane.GatewayTokenFile)
		serverToken := tokenPath(o, controlplane.ServerTokenFile)
		fmt.Fprintf(o.Out, "Surge server is up. API: %s\nAdmin client config: %s\n"+
			"Tokens (files, mode 0600): join %s   gateway %s   server %s\n\n"+
			"Copy %s and the join token to node machines, the gateway token to gateway machines. Join a node agent with:\n"+
			"  surge agent --api %s --token-file %s --ca-file %s%s\n"+
			"Run a gateway with:\n  surge gateway --api %s --token-file %s --ca-file %s%s\n"+
			"Add a server (three keep serving when one fails), on its machine:\n"+
			"  surge server --join-server %s --token-file %s --ca-file %s --api-addr THAT_IP:7070\n"+
			"Metrics: %s/metrics, and every role's for Prometheus at %s/v1/sd/prometheus, to a token of\n"+
			"  surge token create --role metrics --file metrics-token\n",
			admin.Server, filepath.Join(o.Config.DataDir, controlplane.AdminConfigFile), joinToken, gatewayToken, serverToken,
			ca, admin.Server, joinToken, ca, join, admin.Server, gatewayToken, ca, join,
			admin.Server, serverToken, ca, admin.Server, admin.Server)
	}
	// The server's own end: if it stops first, it takes the others along.
	var serverErr error
	serverDone := false
	roles.Go(func() error {
		select {
		case <-rctx.Done():
			return nil
		case serverErr = <-done:
			serverDone = true
			return wrap("server", serverErr)
		}
	})
	err = roles.Wait()
	stopServer()
	if !serverDone {
		serverErr = <-done
	}
	if err == nil && serverErr != nil {
		err = serverErr
	}
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

// tokenPath is where the server keeps a token: the path is printed,
// never the token, which stdout (a terminal's scroll-back, a service's
// journal) would keep for anyone who reads it.
func tokenPath(o *ServerOptions, file string) string {
	return filepath.Join(o.Config.DataDir, file)
}

// wrap names the role an error came from; nil stays nil.
func wrap(role string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", role, err)
}

// stopNote says what becomes of the replicas when surge up stops.
func stopNote(keep bool) string {
	if keep {
		return "; the replicas keep running, for the next surge up on this data dir"
	}
	return " Surge and every replica it runs"
}

// portOf returns ":PORT" of a listen address, for the curl line.
func portOf(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil && p != "80" {
		return ":" + p
	}
	return ""
}

// selfName is the command as the user typed it ("bin/surge", "surge").
func selfName() string {
	if len(os.Args) > 0 && strings.Contains(os.Args[0], "/") && !filepath.IsAbs(os.Args[0]) {
		return os.Args[0]
	}
	return "surge"
}

// relSelf is self as seen from a directory one level down ("../bin/surge"
// after `cd hi`), for the commands printed.
func relSelf(self string) string {
	if strings.Contains(self, "/") && !filepath.IsAbs(self) {
		return filepath.Join("..", self)
	}
	return self
}
