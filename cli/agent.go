package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/nodeagent"
	"github.com/surgeplatform/surge/nodeagent/network"
	"github.com/surgeplatform/surge/nodeagent/runtime"
)

// AgentOptions are the inputs of `surge agent`, and of the agent inside
// `surge up`.
type AgentOptions struct {
	Streams
	LogLevel string
	// Client is the agent's API identity: server URL, CA and a node token.
	Client            client.Config
	NodeName          string
	Address           string
	StateDir          string
	ContainerdAddress string
	Bridge            string
	GossipAddr        string
	Join              []string
	LogAddr           string
}

func addAgentFlags(c *cobra.Command, o *AgentOptions, withIdentity bool) {
	f := c.Flags()
	d := nodeagent.DefaultConfig()
	r := runtime.DefaultConfig()
	f.StringVar(&o.NodeName, "node-name", d.NodeName, "this node's name")
	f.StringVar(&o.Address, "node-address", d.Address, "this node's address as peers reach it")
	f.StringVar(&o.ContainerdAddress, "containerd-address", r.ContainerdAddress,
		"containerd socket; when none answers, a private containerd is started under the state dir")
	f.StringVar(&o.Bridge, "bridge", r.Network.BridgeName, "Linux bridge of the replicas' network (one per agent on a machine)")
	defGossip := "0.0.0.0:7946"
	if !withIdentity {
		defGossip = "127.0.0.1:7946" // surge up: one machine, nothing to reach
	}
	f.StringVar(&o.GossipAddr, "gossip-addr", defGossip, "where this node gossips (UDP and TCP)")
	defLogs := "0.0.0.0:7073"
	if !withIdentity {
		defLogs = "127.0.0.1:7073"
	}
	f.StringVar(&o.LogAddr, "agent-addr", defLogs, "where this agent serves replica logs (HTTPS, token auth)")
	if withIdentity {
		f.StringSliceVar(&o.Join, "join", nil, "gossip addresses of nodes already in the cluster (HOST:PORT)")
	}
	if withIdentity {
		f.StringVar(&o.StateDir, "state-dir", "/var/lib/surge/agent", "replica logs, network state, private containerd")
	}
}

func newAgentCmd(s Streams, g *globals) *cobra.Command {
	o := &AgentOptions{Streams: s}
	c := &cobra.Command{
		Use:   "agent --api URL --token JOIN_TOKEN",
		Short: "Run a node agent: the replicas bound to this node, on containerd",
		Long: `Agent registers this machine as a node and runs the replicas the scheduler
binds to it. It authenticates with the cluster's join token, which the first
server start prints and keeps in DATA_DIR/join-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.logLevel
			cfg, err := g.clientConfig()
			if err != nil {
				return err
			}
			o.Client = *cfg
			return runAgent(cmd.Context(), o)
		},
	}
	addAgentFlags(c, o, true)
	return c
}

// runAgent runs a node agent until ctx ends.
func runAgent(ctx context.Context, o *AgentOptions) error {
	log, err := newLogger(stderrFile(o.Err), o.LogLevel)
	if err != nil {
		return err
	}
	c, err := client.New(&o.Client)
	if err != nil {
		return err
	}
	acfg := nodeagent.DefaultConfig()
	if o.NodeName != "" {
		acfg.NodeName = strings.ToLower(o.NodeName)
	}
	if o.Address != "" {
		acfg.Address = o.Address
	}
	acfg.LogAddr = o.LogAddr
	registry, err := registryHost(o.Client.Server)
	if err != nil {
		return err
	}
	// Gossip: the key comes from the join token, which is this agent's
	// API token too.
	peers := nodeagent.NewPeers(acfg.NodeName, log)
	var gmeta gossip.NodeMeta
	if ip, err := netip.ParseAddr(acfg.Address); err == nil {
		gmeta.Address = ip
	}
	g, err := gossip.Start(gossip.Options{Role: gossip.RoleAgent, NodeName: acfg.NodeName, Addr: o.GossipAddr,
		Seeds: o.Join, JoinToken: o.Client.Token, Meta: gmeta, Handler: peers, Logger: log})
	if err != nil {
		return fmt.Errorf("join gossip: %w", err)
	}
	defer g.Stop()
	peers.SetGossip(g.Gossip)
	newRuntime := func(ctx context.Context, node *api.Node) (nodeagent.Runtime, error) {
		rc := runtime.DefaultConfig()
		rc.StateDir = o.StateDir
		if o.ContainerdAddress != "" {
			rc.ContainerdAddress = o.ContainerdAddress
		}
		rc.RegistryHost = registry
		rc.RegistryToken = o.Client.Token
		rc.RegistryCA = []byte(o.Client.CertificateAuthority)
		rc.Network.Subnet = node.Spec.PodSubnet
		if o.Bridge != "" {
			rc.Network.BridgeName, rc.Network.NetworkName = o.Bridge, o.Bridge
		}
		rc.Log = log.With("component", "runtime")
		rc.Network.Log = log.With("component", "network")
		r, err := runtime.New(ctx, rc)
		if err != nil {
			return nil, err
		}
		peers.SetRouter(r.Network())
		meta := gmeta
		meta.CPUMillis, meta.MemoryBytes = acfg.MilliCPU, acfg.MemoryBytes
		if p, err := netip.ParsePrefix(node.Spec.PodSubnet); err == nil && r.Network().Mode() == network.ModeCNI {
			meta.PodCIDR = p
		}
		if err := g.UpdateMeta(ctx, meta); err != nil {
			log.Warn("gossip metadata", "err", err)
		}
		return r, nil
	}
	agent, err := nodeagent.New(acfg, c, newRuntime, peers, log)
	if err != nil {
		return err
	}
	return agent.Run(ctx)
}

// registryHost is the registry's host:port as image references name it:
// the API's address.
func registryHost(server string) (string, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	h = strings.TrimSuffix(h, "/")
	if _, _, err := net.SplitHostPort(h); err != nil {
		return "", fmt.Errorf("API URL %q has no host:port", server)
	}
	return h, nil
}

func stderrFile(w any) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return os.Stderr
}

// agentStateDir is where `surge up` keeps its agent's state.
func agentStateDir(dataDir string) string { return filepath.Join(dataDir, "agent") }
