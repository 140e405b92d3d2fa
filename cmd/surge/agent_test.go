package main

import (
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent"
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
	}
	n := agentOptions(o, log)
	got := []any{n.Client, n.Agent.NodeName, n.Agent.Address, n.Agent.LogAddr, n.Containers.StateDir,
		n.Containers.ContainerdAddress, n.Containers.Network.BridgeName, n.Containers.Network.NetworkName,
		n.GossipAddr, n.Join, n.Log == log, n.Policy.GatewayPorts}
	want := []any{o.Client, "Node-1", "10.0.0.5", "10.0.0.5:7073", "/var/lib/surge/agent",
		"/run/other/containerd.sock", "surge1", "surge1", "10.0.0.5:7946", []string{"10.0.0.1:7946"}, true, []uint16{8080, 9090}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agentOptions (-want +got):\n%s", diff)
	}

	// Flags left empty keep the defaults.
	d := nodeagent.DefaultOptions()
	n = agentOptions(&AgentOptions{}, log)
	if n.Agent.NodeName != d.Agent.NodeName || n.Agent.Address != d.Agent.Address ||
		n.Containers.ContainerdAddress != d.Containers.ContainerdAddress || n.Containers.Network.BridgeName != d.Containers.Network.BridgeName {
		t.Errorf("empty flags: %+v, want the defaults", n)
	}
	if diff := cmp.Diff(d.Policy.GatewayPorts, n.Policy.GatewayPorts); diff != "" {
		t.Errorf("no --gateway-port: gateway ports (-want +got):\n%s", diff)
	}
	if err := agentOptions(&AgentOptions{GatewayPorts: []uint{70000}}, log).Policy.Validate(); err == nil {
		t.Error("--gateway-port 70000: Validate() = nil, want an error")
	}
}
