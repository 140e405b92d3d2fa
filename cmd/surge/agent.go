package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent"
)

// AgentOptions are the inputs of `surge agent`, and of the agent inside
// `surge up`.
type AgentOptions struct {
	cli.Streams
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
	d := nodeagent.DefaultOptions()
	f.StringVar(&o.NodeName, "node-name", d.Agent.NodeName, "this node's name")
	f.StringVar(&o.Address, "node-address", d.Agent.Address, "this node's address as peers reach it")
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
	f.StringVar(&o.LogAddr, "agent-addr", defLogs, "where this agent serves replica logs (HTTPS, token auth)")
	if withIdentity {
		f.StringSliceVar(&o.Join, "join", nil, "gossip addresses of nodes already in the cluster (HOST:PORT)")
	}
	if withIdentity {
		f.StringVar(&o.StateDir, "state-dir", "/var/lib/surge/agent", "replica logs, network state, private containerd")
	}
}

func newAgentCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &AgentOptions{Streams: s}
	c := &cobra.Command{
		Use:   "agent --api URL --token JOIN_TOKEN",
		Short: "Run a node agent: the replicas bound to this node, on containerd",
		Long: `Agent registers this machine as a node and runs the replicas the scheduler
binds to it. It authenticates with the cluster's join token, which the first
server start prints and keeps in DATA_DIR/join-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.LogLevel = g.LogLevel()
			cfg, err := g.ClientConfig()
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
	return nodeagent.Run(ctx, agentOptions(o, log))
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
	n.Agent.LogAddr = o.LogAddr
	n.Containers.StateDir = o.StateDir
	if o.ContainerdAddress != "" {
		n.Containers.ContainerdAddress = o.ContainerdAddress
	}
	if o.Bridge != "" {
		n.Containers.Network.BridgeName, n.Containers.Network.NetworkName = o.Bridge, o.Bridge
	}
	n.GossipAddr, n.Join = o.GossipAddr, o.Join
	return n
}

func stderrFile(w any) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return os.Stderr
}

// agentStateDir is where `surge up` keeps its agent's state.
func agentStateDir(dataDir string) string { return filepath.Join(dataDir, "agent") }
