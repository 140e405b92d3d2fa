package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gateway"
	"github.com/surgeplatform/surge/gossip"
)

// GatewayOptions are the inputs of `surge gateway`, and of the gateway
// inside `surge up`.
type GatewayOptions struct {
	Streams
	LogLevel string
	// Client is the gateway's API identity: a gateway-role token.
	Client     client.Config
	Addr       string
	Domain     string
	DrainDelay time.Duration
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
}

func addGatewayGossipFlags(c *cobra.Command, o *GatewayOptions) {
	c.Flags().StringVar(&o.JoinToken, "join-token", "", "the cluster's join token, to learn endpoints by gossip at once")
	c.Flags().StringVar(&o.GossipAddr, "gossip-addr", "0.0.0.0:7947", "where this gateway gossips")
	c.Flags().StringSliceVar(&o.Join, "join", nil, "gossip addresses of cluster nodes (HOST:PORT)")
}

func newGatewayCmd(s Streams, g *globals) *cobra.Command {
	o := &GatewayOptions{Streams: s}
	c := &cobra.Command{
		Use:   "gateway --api URL --token GATEWAY_TOKEN",
		Short: "Run a gateway: routes and balances every request to the functions' replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.logLevel
			cfg, err := g.clientConfig()
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

// runGateway serves until ctx ends, then drains.
func runGateway(ctx context.Context, o *GatewayOptions, reg prometheus.Registerer) error {
	log, err := newLogger(stderrFile(o.Err), o.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("component", "gateway")
	c, err := client.New(&o.Client)
	if err != nil {
		return err
	}
	cfg := gateway.DefaultConfig()
	if o.Addr != "" {
		cfg.Addr = o.Addr
	}
	if o.Domain != "" {
		cfg.Domain = o.Domain
	}
	cfg.DrainDelay = o.DrainDelay
	sources := []gateway.RouteSource{&gateway.ControlPlaneSource{Client: c, Log: log}}
	if o.JoinToken != "" {
		gs := gateway.NewGossipSource()
		g, err := gossip.Start(gossip.Options{Role: gossip.RoleGateway, NodeName: "gw-" + gatewayName(cfg.Addr),
			Addr: o.GossipAddr, Seeds: o.Join, JoinToken: o.JoinToken, Handler: gs, Logger: log})
		if err != nil {
			return fmt.Errorf("join gossip: %w", err)
		}
		// Leave gossip only after the gateway has drained.
		defer g.Stop()
		sources = append(sources, gs)
	}
	gw, err := gateway.New(cfg, gateway.Deps{
		Sources:    sources,
		Activator:  &gateway.ControlPlaneActivator{Client: c, Log: log},
		Stats:      &gateway.ControlPlaneStatsSink{Client: c, Gateway: gatewayName(cfg.Addr), Log: log},
		Registerer: reg,
		Log:        log,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	log.Info("gateway serving", "addr", cfg.Addr, "domain", cfg.Domain)
	return gw.Run(ctx)
}

// gatewayName names this gateway instance in its load reports.
func gatewayName(addr string) string {
	host, _ := os.Hostname()
	return strings.NewReplacer("[", "", "]", "", ":", "-").Replace(host + "_" + addr)
}
