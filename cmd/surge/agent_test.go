package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent"
	"github.com/surgeplatform/surge/nodeagent/network"
)

func TestAgentOptions(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	o := &AgentOptions{
		Client:            client.Config{Server: "https://10.0.0.1:7070", Token: "tok"},
		NodeName:          "Node-1",
		Address:           "10.0.0.5",
		StateDir:          "/var/lib/surge/agent",
		ContainerdAddress: "/run/other/containerd.sock",
		Bridge:            "surge1",
		GossipAddr:        "10.0.0.5:7946",
		Join:              []string{"10.0.0.1:7946"},
		LogAddr:           "10.0.0.5:7073",
		GatewayPorts:      []uint{8080, 9090},
		ReplicaLogMax:     1 << 20,
		NodeLogMax:        64 << 20,
	}
	n := agentOptions(o, log)
	got := []any{n.Client, n.Agent.NodeName, n.Agent.Address, n.Agent.LogAddr, n.Containers.StateDir,
		n.Containers.ContainerdAddress, n.Containers.Network.BridgeName, n.Containers.Network.NetworkName,
		n.GossipAddr, n.Join, n.Log == log, n.Policy.GatewayPorts, n.Containers.LogMaxSize, n.Containers.LogNodeMaxSize}
	want := []any{o.Client, "Node-1", "10.0.0.5", "10.0.0.5:7073", "/var/lib/surge/agent",
		"/run/other/containerd.sock", "surge1", "surge1", "10.0.0.5:7946", []string{"10.0.0.1:7946"}, true, []uint16{8080, 9090},
		int64(1 << 20), int64(64 << 20)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agentOptions (-want +got):\n%s", diff)
	}

	// Flags left empty keep the defaults.
	d := nodeagent.DefaultOptions()
	n = agentOptions(&AgentOptions{}, log)
	if n.Agent.NodeName != d.Agent.NodeName || n.Agent.Address != d.Agent.Address ||
		n.Containers.ContainerdAddress != d.Containers.ContainerdAddress || n.Containers.Network.BridgeName != d.Containers.Network.BridgeName ||
		n.Containers.LogMaxSize != d.Containers.LogMaxSize || n.Containers.LogNodeMaxSize != d.Containers.LogNodeMaxSize {
		t.Errorf("empty flags: %+v, want the defaults", n)
	}
	if diff := cmp.Diff(d.Policy.GatewayPorts, n.Policy.GatewayPorts); diff != "" {
		t.Errorf("no --gateway-port: gateway ports (-want +got):\n%s", diff)
	}
	if err := agentOptions(&AgentOptions{GatewayPorts: []uint{70000}}, log).Policy.Validate(); err == nil {
		t.Error("--gateway-port 70000: Validate() = nil, want an error")
	}
}

// TestLogCapFlags: the caps' flags take memory quantities, show their
// defaults, and name what is wrong with a bad one.
func TestLogCapFlags(t *testing.T) {
	c := &cobra.Command{Use: "agent"}
	o := &AgentOptions{}
	addAgentFlags(c, o, true)
	f := c.Flags()
	if d := f.Lookup("replica-log-max").DefValue; d != "10Mi" {
		t.Errorf("--replica-log-max default %q, want 10Mi", d)
	}
	if d := f.Lookup("node-log-max").DefValue; d != "1Gi" {
		t.Errorf("--node-log-max default %q, want 1Gi", d)
	}
	if err := f.Parse([]string{"--replica-log-max", "2Mi", "--node-log-max", "300Mi"}); err != nil {
		t.Fatal(err)
	}
	if o.ReplicaLogMax != 2<<20 || o.NodeLogMax != 300<<20 {
		t.Errorf("parsed %d and %d, want 2Mi and 300Mi", o.ReplicaLogMax, o.NodeLogMax)
	}
	err := f.Parse([]string{"--node-log-max", "lots"})
	if err == nil || !strings.Contains(err.Error(), "node-log-max") || !strings.Contains(err.Error(), "1Gi") {
		t.Errorf("bad size: %v, want an error naming the flag and an example", err)
	}
}

func TestAgentOptionsNetworkAndExit(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name string
		o    AgentOptions
		mode network.Mode
		stop bool
	}{
		{"surge agent: CNI, replicas kept", AgentOptions{}, network.ModeCNI, false},
		{"surge agent --host-network", AgentOptions{HostNetwork: true}, network.ModeHost, false},
		{"surge up: replicas stopped", AgentOptions{stopReplicas: true}, network.ModeCNI, true},
		{"surge up --keep-replicas", AgentOptions{stopReplicas: true, KeepReplicas: true}, network.ModeCNI, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := agentOptions(&tt.o, log)
			if n.Containers.Network.Mode != tt.mode || n.Agent.StopReplicasOnExit != tt.stop {
				t.Errorf("mode %q, stop replicas on exit %v; want %q, %v", n.Containers.Network.Mode, n.Agent.StopReplicasOnExit, tt.mode, tt.stop)
			}
		})
	}
}

func TestAgentErrorSaysWhatToDo(t *testing.T) {
	mp := fmt.Errorf("container runtime: %w", &network.MissingPluginsError{Missing: []string{"bridge", "host-local"}, Dirs: []string{"/usr/lib/cni", "/opt/cni/bin"}})
	want := "the CNI plugins that give each replica its own network (bridge, host-local) are not in /usr/lib/cni or /opt/cni/bin: " +
		"install them (apt-get install containernetworking-plugins), or pass --host-network to run replicas in the host's network, without isolation"
	if got := agentError(mp, "").Error(); got != want {
		t.Errorf("missing plugins:\n got %q\nwant %q", got, want)
	}
	owned := &network.OwnedError{Bridge: "surge0", Owner: network.Owner{StateDir: "/d/agent/network", Node: "vm", PID: 42}}
	want = `bridge surge0 belongs to the agent of node "vm" (state dir /d/agent/network, pid 42): stop it, or pass another --bridge and --pod-cidr`
	if got := agentError(owned, " and --pod-cidr").Error(); got != want {
		t.Errorf("owned bridge:\n got %q\nwant %q", got, want)
	}
	other := errors.New("other")
	if got := agentError(other, ""); got != other {
		t.Errorf("another error: %v, want it as is", got)
	}
}
