//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/e2e/harness"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// startCluster starts the harness's cluster from the README's commands:
// one server, three agents, two gateways.
func startCluster(t *testing.T) *harness.Cluster {
	t.Helper()
	requireRuntime(t)
	// Short: a private containerd's socket path lives under it.
	dir, err := os.MkdirTemp("", "sh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return harness.Start(t, harness.Options{
		Bin: surgeBin, README: "../README.md", Dir: dir,
		Servers: 1, Agents: 3, Gateways: 2,
	})
}

// deployHello builds the hello example and deploys it with n replicas,
// returning them once every one is Ready (deploy itself returns once the
// first is).
func deployHello(t *testing.T, c *harness.Cluster, n int) []api.Replica {
	t.Helper()
	image := strings.TrimSpace(c.MustSurge("build", "../examples/hello", "-t", "hello:v1"))
	c.MustSurge("deploy", "hello", "--image", image, "--min-scale", strconv.Itoa(n))
	var ready []api.Replica
	waitUntil(t, fmt.Sprintf("%d Ready replicas of hello", n), time.Minute, func() bool {
		reps, err := c.Replicas("hello")
		if err != nil {
			return false
		}
		ready = ready[:0]
		for _, r := range reps {
			if r.Status.Phase == api.ReplicaReady {
				ready = append(ready, r)
			}
		}
		return len(ready) == n
	})
	return ready
}

// TestClusterRoutesAcrossNodes: the scheduler spreads a function's
// replicas over the nodes, each node's replicas take addresses from the
// subnet etcd gave the node, every gateway reaches every replica, and a
// replica reaches the replicas of its function on the other nodes.
func TestClusterRoutesAcrossNodes(t *testing.T) {
	c := startCluster(t)
	reps := deployHello(t, c, 3)
	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	subnet := map[string]string{}
	for _, n := range nodes {
		subnet[n.Metadata.Name] = n.Spec.PodSubnet
	}
	var onNodes []string
	for _, r := range reps {
		onNodes = append(onNodes, r.Spec.NodeName)
		if !inSubnet(r.Status.IP, subnet[r.Spec.NodeName]) {
			t.Errorf("replica %s on %s has IP %s, outside the node's subnet %s", r.Metadata.Name, r.Spec.NodeName, r.Status.IP, subnet[r.Spec.NodeName])
		}
	}
	slices.Sort(onNodes)
	if want := []string{"a1", "a2", "a3"}; !slices.Equal(onNodes, want) {
		t.Fatalf("replicas on nodes %v, want one on each of %v", onNodes, want)
	}

	// Every gateway reaches every replica: enough requests through each
	// that each replica answers some.
	for i := range c.Gateways {
		res := harness.StartLoad(harness.LoadOptions{
			Targets: []string{c.GatewayAddr(i)}, Host: "hello.surge.localhost", Clients: 4, Duration: 3 * time.Second,
		}).Wait()
		if f := res.Failed(); len(f) > 0 {
			t.Errorf("gateway %d: %d of %d requests failed: %s", i+1, len(f), len(res), res.Errors())
		}
		answered := map[string]bool{}
		for _, s := range res {
			answered[s.Replica] = true
		}
		for _, r := range reps {
			if !answered[r.Metadata.Name] {
				t.Errorf("gateway on %s never reached replica %s on %s (%d requests)", c.Gateways[i].Host.Name, r.Metadata.Name, r.Spec.NodeName, len(res))
			}
		}
	}

	// surge logs reads every replica's log through the API, which fetches
	// each from its node's agent with its own certificate.
	var logs, logsErr string
	deadline := time.Now().Add(time.Minute)
	for !everyReplicaLogged(logs, reps) {
		if time.Now().After(deadline) {
			t.Fatalf("surge logs printed not every replica's first line after a minute:\n%s\nstderr: %s", logs, logsErr)
		}
		logs, logsErr, _ = c.Surge("logs", "hello")
	}

	// From inside a replica's own network namespace on a1, the replicas
	// of the same function on a2 and a3 answer.
	a1 := c.AgentOf("a1")
	state := filepath.Join(a1.Dir, "agent", "network")
	namespaces, err := network.ReplicaNamespaces(state)
	if err != nil || len(namespaces) != 1 {
		t.Fatalf("a1's replica namespaces: %v, %v; want one", namespaces, err)
	}
	from := filepath.Join(state, "netns", namespaces[0])
	for _, r := range reps {
		if r.Spec.NodeName == "a1" {
			continue
		}
		out, err := exec.Command("nsenter", "--net="+from, "--", "curl", "-sS", "-m", "5",
			"http://"+net.JoinHostPort(r.Status.IP, strconv.Itoa(int(r.Status.Port)))+"/").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "host: "+r.Metadata.Name) {
			t.Errorf("from a replica on a1, replica %s on %s at %s: %v: %s", r.Metadata.Name, r.Spec.NodeName, r.Status.IP, err, out)
		}
	}
}

// everyReplicaLogged reports whether surge logs printed the first line of
// every replica.
func everyReplicaLogged(out string, reps []api.Replica) bool {
	lines := strings.Split(out, "\n")
	for _, r := range reps {
		if !slices.ContainsFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, "["+r.Metadata.Name+"] ") && strings.Contains(l, "hello: listening")
		}) {
			return false
		}
	}
	return true
}

func inSubnet(ip, cidr string) bool {
	a, err := netip.ParseAddr(ip)
	p, err2 := netip.ParsePrefix(cidr)
	return err == nil && err2 == nil && p.Contains(a)
}
