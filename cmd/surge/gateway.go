package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gateway"
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
	// JoinToken keys gossip; GossipAddr and Join place this gateway in it.
	// Without a join token the gateway learns endpoints from etcd alone.
	JoinToken  string
	GossipAddr string
	Join       []string
}

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
}

func addGatewayGossipFlags(c *cobra.Command, o *GatewayOptions) {
	c.Flags().StringVar(&o.JoinToken, "join-token", "", "the cluster's join token, to learn endpoints by gossip at once")
	c.Flags().StringVar(&o.GossipAddr, "gossip-addr", gateway.DefaultOptions().GossipAddr, "where this gateway gossips")
	c.Flags().StringSliceVar(&o.Join, "join", nil, "gossip addresses of cluster nodes (HOST:PORT)")
}

func newGatewayCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &GatewayOptions{Streams: s}
	c := &cobra.Command{
		Use:   "gateway --api URL --token GATEWAY_TOKEN",
		Short: "Run a gateway: routes and balances every request to the functions' replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			cfg, err := g.ClientConfig()
			if err != nil {
				return err
			}
			o.Client = *cfg
			return runGateway(cmd.Context(), o, prometheus.NewRegistry())
		},
	}
	addGatewayFlags(c, o)
	addGatewayGossipFlags(c, o)
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
	opts.API = o.Client
	if o.Addr != "" {
		opts.Config.Addr = o.Addr
	}
	if o.Domain != "" {
		opts.Config.Domain = o.Domain
	}
	opts.Config.DrainDelay = o.DrainDelay
	opts.Config.QueueDepth, opts.Config.MaxQueued = o.QueueDepth, o.MaxQueued
	opts.JoinToken, opts.GossipSeeds = o.JoinToken, o.Join
	if o.GossipAddr != "" {
		opts.GossipAddr = o.GossipAddr
	}
	opts.Registerer = reg
	opts.Log = log.With("component", "gateway")
	return gateway.Run(ctx, opts)
}
