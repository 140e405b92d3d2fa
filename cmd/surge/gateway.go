package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gateway"
	"github.com/surgeplatform/surge/internal/telemetry"
)

// GatewayOptions are the inputs of `surge gateway`, and of the gateway
// inside `surge up`.
type GatewayOptions struct {
	cli.Streams
	LogLevel string
	// Client is the gateway's API identity: a gateway-role token.
	Client     client.Config
	Addr       string
	Domain     string
	DrainDelay time.Duration
	// QueueDepth and MaxQueued bound the requests waiting for replicas:
	// per revision (a function's spec.queueDepth overrides it), and in
	// all (0: from the memory the gateway may use).
	QueueDepth int
	MaxQueued  int
	// PathRouting, MaxConnsPerIP, RequestBodyTimeout and TrustedProxies
	// (networks or addresses) bound what clients may do: see the
	// gateway.Config fields of those names.
	PathRouting        bool
	MaxConnsPerIP      int
	RequestBodyTimeout time.Duration
	TrustedProxies     []string
	// GossipAddr and Join place this gateway in the cluster's gossip,
	// keyed with the gossip key it gets from the API with its token.
	// Without Join the gateway learns endpoints from etcd alone.
	GossipAddr string
	Join       []string
	// TLS is HTTPS: addresses, certificates, redirects.
	TLS GatewayTLSOptions
	// retired holds the flags a gateway no longer takes
	// (--join-token-file, --join-token): set, they only say what to do.
	retired string
	// MetricsAddr is --metrics-addr (surge gateway); metricsURL is where
	// the gateway tells discovery its metrics are, once bound.
	MetricsAddr string
	metricsURL  string
	// AccessLog is --access-log (off, sampled, full); AccessLogFile
	// --access-log-file, "" for standard error.
	AccessLog     string
	AccessLogFile string
}

// errJoinTokenRetired is what --join-token-file and --join-token say: the
// join token is for nodes, used once to obtain a node's certificate.
var errJoinTokenRetired = cli.Usagef("a gateway no longer takes the join token: it gets the gossip key from the API with its gateway token; drop --join-token-file")

func addGatewayFlags(c *cobra.Command, o *GatewayOptions) {
	d := gateway.DefaultConfig()
	c.Flags().StringVar(&o.Addr, "gateway-addr", d.Addr, "where the gateway serves HTTP")
	c.Flags().StringVar(&o.Domain, "domain", d.Domain, "functions answer at NAME.DOMAIN and NAME.NAMESPACE.DOMAIN")
	// A second of drain lets load balancers see the failing health check
	// and keep-alive clients be told to leave, so no request is caught by
	// the close; 0 stops at once.
	c.Flags().DurationVar(&o.DrainDelay, "drain-delay", time.Second, "on SIGTERM, keep serving this long with readiness false before closing")
	c.Flags().IntVar(&o.QueueDepth, "queue-depth", d.QueueDepth, "how many requests of one function may wait for a replica (a burst from zero); more get 503 with Retry-After. A function's queueDepth overrides it")
	c.Flags().IntVar(&o.MaxQueued, "max-queued", d.MaxQueued, "how many requests may wait for replicas in all; 0 sizes it to a quarter of the gateway's memory")
	c.Flags().BoolVar(&o.PathRouting, "path-routing", d.PathRouting, "also route /fn/NAME/ on any host; every function so routed shares one web origin: turn it off where browsers visit functions, and use NAME.DOMAIN")
	c.Flags().IntVar(&o.MaxConnsPerIP, "max-conns-per-ip", d.MaxConnsPerIP, "open connections one client address may hold (IPv6: one /64); more get 429. 0: no cap")
	c.Flags().DurationVar(&o.RequestBodyTimeout, "request-body-timeout", d.RequestBodyTimeout, "how long a request body may take to stream to a replica once the request has its slot; then 408")
	c.Flags().StringSliceVar(&o.TrustedProxies, "trusted-proxies", nil, "networks of the proxies in front of the gateway (CIDR,...): their Forwarded, X-Real-IP and X-Forwarded-* are believed, anyone else's replaced, and they are not capped per address")
	c.Flags().StringVar(&o.AccessLog, "access-log", string(gateway.AccessLogSampled),
		"which requests the access log records, a JSON line each: off, sampled (one in a hundred, and every 5xx) or full")
	c.Flags().StringVar(&o.AccessLogFile, "access-log-file", "", "where the access log goes (appended); default standard error")
}

// clientLimits sets in c what the flags allow clients.
func (o *GatewayOptions) clientLimits(c *gateway.Config) error {
	c.PathRouting, c.MaxConnsPerIP, c.RequestBodyTimeout = o.PathRouting, o.MaxConnsPerIP, o.RequestBodyTimeout
	c.TrustedProxies = nil
	for _, s := range o.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return cli.Usagef("--trusted-proxies: %q is neither a network such as 10.0.0.0/8 nor an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, p)
	}
	return nil
}

func addGatewayGossipFlags(c *cobra.Command, o *GatewayOptions) {
	c.Flags().StringVar(&o.retired, "join-token-file", "", "retired: the gateway gets the gossip key from the API")
	c.Flags().StringVar(&o.retired, "join-token", "", "retired: the gateway gets the gossip key from the API")
	_ = c.Flags().MarkHidden("join-token-file")
	_ = c.Flags().MarkHidden("join-token")
	c.Flags().StringVar(&o.GossipAddr, "gossip-addr", gateway.DefaultOptions().GossipAddr, "where this gateway gossips")
	c.Flags().StringSliceVar(&o.Join, "join", nil, "gossip addresses of cluster members (HOST:PORT), to hear of ready endpoints at once; the gossip key comes from the API")
}

func newGatewayCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &GatewayOptions{Streams: s}
	c := &cobra.Command{
		Use:   "gateway --api URL --token-file GATEWAY_TOKEN_FILE [--join HOST:PORT,...] [--tls-cert F --tls-key F] [--tls-dir DIR]",
		Short: "Run a gateway: routes and balances every request to the functions' replicas",
		Long: `Gateway routes every request to a replica of its function. It reads the API
with a gateway token (--token-file, or SURGE_TOKEN; the first server start
keeps one in DATA_DIR/gateway-token), never a flag's value, which ps shows.
With --join it also joins the cluster's gossip, with the gossip key the API
gives it, to hear of ready endpoints at once; it routes what gossip
announces only where the API agrees.

With --tls-cert and --tls-key, or --tls-dir, it serves HTTPS too, on
--tls-addr (:8443): the certificate for each client's name (SNI), wildcards
too, reloaded when the files change. --https-redirect sends plain HTTP there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			cfg, err := g.ClientConfig()
			if err != nil {
				return err
			}
			if o.retired != "" {
				return errJoinTokenRetired
			}
			o.Client = *cfg
			process, reg := telemetry.NewProcessRegistry(g.Version()), prometheus.NewRegistry()
			m, err := listenMetrics(o.MetricsAddr, prometheus.Gatherers{process, reg}, o.Client)
			if err != nil {
				return err
			}
			if m != nil {
				o.metricsURL = m.url
			}
			return withMetrics(cmd.Context(), m, func(ctx context.Context) error { return runGateway(ctx, o, reg) })
		},
	}
	addGatewayFlags(c, o)
	addGatewayGossipFlags(c, o)
	addMetricsFlag(c, &o.MetricsAddr, defaultGatewayMetricsAddr)
	addGatewayTLSFlags(c, &o.TLS, false)
	return c
}

// runGateway turns the flags into gateway.Options and runs the gateway
// until ctx ends; the gateway assembles and drains itself.
func runGateway(ctx context.Context, o *GatewayOptions, reg prometheus.Registerer) error {
	log, err := newLogger(stderrFile(o.Err), o.LogLevel)
	if err != nil {
		return err
	}
	opts := gateway.DefaultOptions()
	opts.API = o.Client.WithEndpoints(o.Client.Endpoints()) // --api A,B,C: fail over between them
	if o.Addr != "" {
		opts.Config.Addr = o.Addr
	}
	if o.Domain != "" {
		opts.Config.Domain = o.Domain
	}
	opts.Config.DrainDelay = o.DrainDelay
	opts.Config.QueueDepth, opts.Config.MaxQueued = o.QueueDepth, o.MaxQueued
	if err := o.clientLimits(&opts.Config); err != nil {
		return err
	}
	if err := o.TLS.apply(&opts); err != nil {
		return err
	}
	opts.GossipSeeds = o.Join
	if o.GossipAddr != "" {
		opts.GossipAddr = o.GossipAddr
	}
	opts.Registerer, opts.MetricsURL = reg, o.metricsURL
	opts.Log = log.With("component", "gateway")
	if o.AccessLog != "" {
		if opts.Config.AccessLog, err = gateway.ParseAccessLogMode(o.AccessLog); err != nil {
			return cli.Usagef("--access-log: %v", err)
		}
	}
	opts.AccessLog = stderrFile(o.Err)
	if o.AccessLogFile != "" {
		f, err := os.OpenFile(o.AccessLogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return fmt.Errorf("--access-log-file: %w", err)
		}
		defer f.Close()
		opts.AccessLog = f
	}
	return gateway.Run(ctx, opts)
}
