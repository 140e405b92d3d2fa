package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/telemetry"
	"github.com/surgeplatform/surge/nodeagent"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// AgentOptions are the inputs of `surge agent`, and of the agent inside
// `surge up`.
type AgentOptions struct {
	cli.Streams
	LogLevel string
	// Client is the agent's API identity: server URL, CA and a node token.
	Client   client.Config
	NodeName string
	Address  string
	// Labels are the node's labels, for functions' node selectors.
	Labels            map[string]string
	StateDir          string
	ContainerdAddress string
	Bridge            string
	GossipAddr        string
	Join              []string
	LogAddr           string
	// GatewayPorts are where gateways listen: the only ports replicas
	// reach on the nodes' addresses. Empty keeps the default (8080).
	GatewayPorts []uint
	// ReplicaLogMax and NodeLogMax cap the replicas' logs on disk, each
	// replica's and all of them together, in bytes; 0 keeps the default.
	ReplicaLogMax, NodeLogMax int64
	// HostNetwork runs replicas in the host's network (no isolation),
	// for machines without the CNI plugins.
	HostNetwork bool
	// KeepReplicas (surge up) leaves the replicas running when Surge
	// stops, for the next surge up on the same data dir to adopt; without
	// it surge up stops them. surge agent always keeps them, as kubelet.
	KeepReplicas bool
	// stopReplicas is set by surge up: stop every replica on exit unless
	// KeepReplicas.
	stopReplicas bool
	// claim is the agent's hold on its bridge, when taken before the
	// agent starts (surge up takes it before the server).
	claim *network.Claim
	// MetricsAddr is --metrics-addr (surge agent). metrics is where the
	// agent registers its metrics, and metricsURL where it tells
	// discovery they are served, once bound.
	MetricsAddr string
	metrics     prometheus.Registerer
	metricsURL  string
}

func addAgentFlags(c *cobra.Command, o *AgentOptions, withIdentity bool) {
	f := c.Flags()
	d := nodeagent.DefaultOptions()
	f.StringVar(&o.NodeName, "node-name", d.Agent.NodeName, "this node's name")
	f.StringVar(&o.Address, "node-address", d.Agent.Address, "this node's address as peers reach it")
	f.StringToStringVar(&o.Labels, "node-label", nil, "a label of this node, K=V, that functions' --node-selector match (repeatable)")
	f.StringVar(&o.ContainerdAddress, "containerd-address", d.Containers.ContainerdAddress,
		"containerd socket; when none answers, a private containerd is started under the state dir")
	f.StringVar(&o.Bridge, "bridge", d.Containers.Network.BridgeName, "Linux bridge of the replicas' network (one per agent on a machine)")
	defGossip := d.GossipAddr
	if !withIdentity {
		defGossip = "127.0.0.1:7946" // surge up: one machine, nothing to reach
	}
	f.StringVar(&o.GossipAddr, "gossip-addr", defGossip, "where this node gossips (UDP and TCP)")
	defLogs := "0.0.0.0:7073"
	if !withIdentity {
		defLogs = "127.0.0.1:7073"
	}
	f.StringVar(&o.LogAddr, "agent-addr", defLogs, "where this agent serves replica logs (HTTPS, to the API server's client certificate only)")
	o.ReplicaLogMax, o.NodeLogMax = d.Containers.LogMaxSize, d.Containers.LogNodeMaxSize
	f.Var(sizeFlag{&o.ReplicaLogMax}, "replica-log-max", "most of one replica's log kept on disk, its newest lines")
	f.Var(sizeFlag{&o.NodeLogMax}, "node-log-max", "most of all replicas' logs kept on this node's disk; the oldest go first")
	if withIdentity {
		f.StringSliceVar(&o.Join, "join", nil, "gossip addresses of nodes already in the cluster (HOST:PORT)")
	}
	if withIdentity {
		f.UintSliceVar(&o.GatewayPorts, "gateway-port", nil,
			"TCP port the gateways listen on, the only port replicas reach on nodes' addresses (default 8080; repeat for several)")
	}
	if withIdentity {
		f.StringVar(&o.StateDir, "state-dir", "/var/lib/surge/agent", "replica logs, network state, private containerd")
	}
	f.BoolVar(&o.HostNetwork, "host-network", false,
		"run replicas in the host's network, without isolation (for machines without the CNI plugins)")
	if !withIdentity {
		f.BoolVar(&o.KeepReplicas, "keep-replicas", false, "leave the replicas running when Surge stops; the next surge up on this data dir adopts them")
	}
}

func newAgentCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &AgentOptions{Streams: s}
	c := &cobra.Command{
		Use:   "agent --api URL --token-file JOIN_TOKEN_FILE --ca-file CA",
		Short: "Run a node agent: the replicas bound to this node, on containerd",
		Long: `Agent registers this machine as a node and runs the replicas the scheduler
binds to it. It joins with the cluster's join token, which the first server
start keeps in DATA_DIR/join-token (copy the file; pass --token-file, or set
SURGE_TOKEN: a token is never a flag's value, which ps shows): the token
obtains, once, the node's own client certificate (kept in STATE_DIR/identity
and renewed while the agent runs), with which the agent then authenticates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			cfg, err := g.ClientConfig()
			if err != nil {
				return err
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
			o.metrics = reg
			return withMetrics(cmd.Context(), m, func(ctx context.Context) error { return runAgent(ctx, o) })
		},
	}
	addAgentFlags(c, o, true)
	addMetricsFlag(c, &o.MetricsAddr, defaultAgentMetricsAddr)
	return c
}

// runAgent runs a node agent until ctx ends.
func runAgent(ctx context.Context, o *AgentOptions) error {
	log, err := newLogger(stderrFile(o.Err), o.LogLevel)
	if err != nil {
		return err
	}
	return agentError(nodeagent.Run(ctx, agentOptions(o, log)), "")
}

// agentError turns what a user fixes on the machine into the line that
// says how; more names the flags that give surge up another bridge.
func agentError(err error, more string) error {
	var mp *network.MissingPluginsError
	var owned *network.OwnedError
	switch {
	case errors.As(err, &mp):
		return fmt.Errorf("the CNI plugins that give each replica its own network (%s) are not in %s: install them (apt-get install containernetworking-plugins), or pass --host-network to run replicas in the host's network, without isolation",
			strings.Join(mp.Missing, ", "), strings.Join(mp.Dirs, " or "))
	case errors.As(err, &owned):
		who := "another agent"
		if owned.Owner.PID != 0 {
			who = fmt.Sprintf("the agent of node %q (state dir %s, pid %d)", owned.Owner.Node, owned.Owner.StateDir, owned.Owner.PID)
		}
		return fmt.Errorf("bridge %s belongs to %s: stop it, or pass another --bridge%s", owned.Bridge, who, more)
	}
	return err
}

// agentOptions turns the flags into the agent's options; a flag left empty
// keeps the default.
func agentOptions(o *AgentOptions, log *slog.Logger) nodeagent.Options {
	n := nodeagent.DefaultOptions()
	// Several API servers (--api A,B,C): the first is the agent's
	// Server, the others its Servers, to fail over to.
	n.Client, n.Log = o.Client.WithEndpoints(o.Client.Endpoints()), log
	if o.NodeName != "" {
		n.Agent.NodeName = o.NodeName
	}
	if o.Address != "" {
		n.Agent.Address = o.Address
	}
	if len(o.Labels) > 0 {
		n.Agent.Labels = o.Labels
	}
	n.Agent.LogAddr = o.LogAddr
	n.Containers.StateDir = o.StateDir
	if o.ContainerdAddress != "" {
		n.Containers.ContainerdAddress = o.ContainerdAddress
	}
	if o.Bridge != "" {
		n.Containers.Network.BridgeName, n.Containers.Network.NetworkName = o.Bridge, o.Bridge
	}
	n.GossipAddr, n.Join = o.GossipAddr, o.Join
	if len(o.GatewayPorts) > 0 {
		n.Policy.GatewayPorts = nil
		for _, p := range o.GatewayPorts {
			if p > 65535 {
				p = 0 // out of range: Validate names it
			}
			n.Policy.GatewayPorts = append(n.Policy.GatewayPorts, uint16(p))
		}
	}
	if o.ReplicaLogMax != 0 {
		n.Containers.LogMaxSize = o.ReplicaLogMax
	}
	if o.NodeLogMax != 0 {
		n.Containers.LogNodeMaxSize = o.NodeLogMax
	}
	if o.HostNetwork {
		n.Containers.Network.Mode = network.ModeHost
	}
	n.Agent.StopReplicasOnExit = o.stopReplicas && !o.KeepReplicas
	n.Metrics, n.Agent.MetricsURL = o.metrics, o.metricsURL
	n.Containers.Network.Claim = o.claim
	return n
}

// sizeFlag is a flag that sets a size in bytes, written as a memory
// quantity: "10Mi", "1Gi", "65536".
type sizeFlag struct{ b *int64 }

var _ pflag.Value = sizeFlag{}

func (f sizeFlag) String() string {
	if f.b == nil {
		return ""
	}
	return api.FormatMemory(*f.b)
}

func (f sizeFlag) Set(s string) error {
	b, err := api.ParseMemory(s)
	if err != nil {
		return fmt.Errorf("want a size such as 10Mi or 1Gi: %w", err)
	}
	*f.b = b
	return nil
}

func (sizeFlag) Type() string { return "size" }

func stderrFile(w any) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return os.Stderr
}

// agentStateDir is where `surge up` keeps its agent's state.
func agentStateDir(dataDir string) string { return filepath.Join(dataDir, "agent") }
