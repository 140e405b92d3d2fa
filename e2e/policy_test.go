//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/netns"
	cnins "github.com/containernetworking/plugins/pkg/ns"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/e2e/harness"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// The world behind node a1, in a namespace the test makes: a server on
// the Internet and a metadata service, each an address of its own.
const (
	outsideIP  = "198.51.100.1" // TEST-NET-2
	metadataIP = "169.254.169.254"
)

// TestReplicaPolicy attacks from inside a replica's network namespace on
// a cluster of three nodes, through the real agents and containerd: the
// node's ports, a peer's, the API server, another function's replicas on
// the same node and on another, and a metadata service are out of reach;
// the replicas of its own function, the world outside, and the gateways
// (on its node and on a peer) are not, and the gateways reach it. Every
// forbidden target answers a vantage point the policy allows, so that
// neither an open nor a closed policy passes. An agent stopped with no
// replica left takes its rules with it.
func TestReplicaPolicy(t *testing.T) {
	c := startCluster(t)
	image := strings.TrimSpace(c.MustSurge("build", "../examples/hello", "-t", "hello:v1"))
	for _, fn := range []string{"hello", "probe"} {
		c.MustSurge("deploy", fn, "--image", image, "--min-scale", "3")
	}
	hello, probe := readyReplicas(t, c, "hello", 3), readyReplicas(t, c, "probe", 3)
	on := func(reps []api.Replica, node string, same bool) *api.Replica {
		for i := range reps {
			if (reps[i].Spec.NodeName == node) == same {
				return &reps[i]
			}
		}
		t.Fatalf("no replica of %s %s %s: %s", reps[0].Spec.Function, map[bool]string{true: "on", false: "off"}[same], node, placement(hello, probe))
		return nil
	}
	attacker := on(hello, "a1", true)
	ownElsewhere := on(hello, "a1", false)
	otherHere, otherElsewhere := on(probe, "a1", true), on(probe, "a1", false)
	t.Logf("placement: %s; attacker %s", placement(hello, probe), attacker.Metadata.Name)
	from := replicaNetNS(t, c, attacker)
	a1, a2 := c.AgentOf("a1").Host, c.AgentOf("a2").Host
	server := c.Servers[0].Host
	addWorld(t, c.Net.Prefix, a1)

	at := func(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }
	replicaAddr := func(r *api.Replica) string { return at(r.Status.IP, int(r.Status.Port)) }

	// Allowed: each answers the attacker.
	for _, f := range []struct{ name, addr, host, want string }{
		{"its own function on another node", replicaAddr(ownElsewhere), "", "host: " + ownElsewhere.Metadata.Name},
		{"the gateway on its node, to another function", at(a1.IP.String(), harness.GatewayPort), "probe.surge.localhost", "hello from surge"},
		{"the gateway on a peer node", at(a2.IP.String(), harness.GatewayPort), "probe.surge.localhost", "hello from surge"},
		{"a server outside the cluster", at(outsideIP, 80), "", "outside"},
	} {
		got, err := httpGetFrom(from, f.addr, f.host)
		if err != nil || !strings.Contains(got, f.want) {
			t.Errorf("%s (%s): %q, %v; want an answer with %q", f.name, f.addr, got, err, f.want)
		}
		if f.want == "outside" && !strings.Contains(got, "from 169.254.200.1:") {
			t.Errorf("%s: the server saw %q, want the node's address (masqueraded)", f.name, got)
		}
	}

	// Forbidden: each answers a vantage point the policy allows, and not
	// the attacker.
	for _, f := range []struct {
		name, addr string
		control    string // a namespace that reaches addr
	}{
		{"the node's agent (log server)", at(a1.IP.String(), 7073), a1.NSPath},
		{"the node's gossip", at(a1.IP.String(), 7946), a1.NSPath},
		{"a peer node's agent", at(a2.IP.String(), 7073), a1.NSPath},
		{"the API server", at(server.IP.String(), harness.APIPort), a1.NSPath},
		{"another function on its node", replicaAddr(otherHere), a1.NSPath},
		{"another function on another node", replicaAddr(otherElsewhere), a1.NSPath},
		{"the metadata service", at(metadataIP, 80), a1.NSPath},
		{"another function over IPv6", "[" + linkLocal(t, replicaNetNS(t, c, otherHere)) + "%eth0]:8080", replicaNetNS(t, c, otherHere)},
	} {
		if err := dialFrom(f.control, f.addr); err != nil {
			t.Errorf("control: %s (%s) does not answer %s: %v", f.name, f.addr, f.control, err)
			continue
		}
		if err := dialFrom(from, f.addr); err == nil {
			t.Errorf("a replica reached %s (%s)", f.name, f.addr)
		}
	}

	// The gateways reach the replicas, on their node and beyond.
	for i := range c.Gateways {
		res := harness.StartLoad(harness.LoadOptions{
			Targets: []string{c.GatewayAddr(i)}, Host: "hello.surge.localhost", Clients: 2, Duration: 2 * time.Second,
		}).Wait()
		answered := map[string]bool{}
		for _, s := range res {
			answered[s.Replica] = true
		}
		for _, r := range hello {
			if !answered[r.Metadata.Name] {
				t.Errorf("gateway on %s never reached replica %s on %s (%d requests, %d failed: %s)",
					c.Gateways[i].Host.Name, r.Metadata.Name, r.Spec.NodeName, len(res), len(res.Failed()), res.Errors())
			}
		}
	}

	// An agent stopped with no replica left takes its rules with it.
	for _, fn := range []string{"hello", "probe"} {
		c.MustSurge("rm", fn)
	}
	state := filepath.Join(c.AgentOf("a1").Dir, "agent", "network")
	deadline := time.Now().Add(time.Minute)
	for {
		left, err := network.ReplicaNamespaces(state)
		if err == nil && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a1 still holds replica namespaces %v (%v) a minute after the functions went", left, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := rulesIn(t, a1.NSPath); !strings.Contains(s, "SURGE-surge0-OUT") {
		t.Fatalf("a1's rules while its agent runs have no SURGE-surge0-OUT:\n%s", s)
	}
	if err := c.AgentOf("a1").Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("agent a1 stopped with %v", err)
	}
	if s := rulesIn(t, a1.NSPath); strings.Contains(s, "SURGE-") {
		t.Errorf("rules left after agent a1 stopped cleanly:\n%s", s)
	}
}

// readyReplicas waits until fn has n Ready replicas with addresses.
func readyReplicas(t *testing.T, c *harness.Cluster, fn string, n int) []api.Replica {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		reps, err := c.Replicas(fn)
		ready := 0
		for _, r := range reps {
			if r.Status.Phase == api.ReplicaReady && r.Status.IP != "" {
				ready++
			}
		}
		if err == nil && ready == n && len(reps) == n {
			return reps
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d Ready replicas, have %+v (%v)", fn, n, reps, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func placement(sets ...[]api.Replica) string {
	var b []string
	for _, reps := range sets {
		for _, r := range reps {
			b = append(b, r.Metadata.Name+"@"+r.Spec.NodeName)
		}
	}
	return strings.Join(b, " ")
}

// replicaNetNS returns the network namespace of a replica, from its
// agent's attachment record.
func replicaNetNS(t *testing.T, c *harness.Cluster, r *api.Replica) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.AgentOf(r.Spec.NodeName).Dir, "agent", "network", "attachments", r.Metadata.Name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var a network.Attachment
	if err := json.Unmarshal(b, &a); err != nil || a.NetNS == "" {
		t.Fatalf("attachment of %s: %s (%v)", r.Metadata.Name, b, err)
	}
	return a.NetNS
}

// addWorld makes a namespace behind host, joined by a veth, that holds
// the outside server's and the metadata service's addresses, routed from
// host, each answering on port 80 with its own address and the caller's.
// It goes with the test.
func addWorld(t *testing.T, prefix string, host *harness.Host) {
	t.Helper()
	ns, link := prefix+"-world", prefix+"w"
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Errorf("delete namespace %s: %v: %s", ns, err, out)
		}
	})
	in := func(path string, argv ...string) []string {
		return append([]string{"nsenter", "--net=" + path, "--"}, argv...)
	}
	world := "/run/netns/" + ns
	cmds := [][]string{
		{"ip", "netns", "add", ns},
		in(host.NSPath, "ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns),
		in(host.NSPath, "ip", "addr", "add", "169.254.200.1/30", "dev", link),
		in(host.NSPath, "ip", "link", "set", link, "up"),
		in(host.NSPath, "ip", "route", "add", outsideIP+"/32", "via", "169.254.200.2"),
		in(host.NSPath, "ip", "route", "add", metadataIP+"/32", "via", "169.254.200.2"),
		in(world, "ip", "link", "set", "lo", "up"),
		in(world, "ip", "addr", "add", "169.254.200.2/30", "dev", "eth0"),
		in(world, "ip", "link", "set", "eth0", "up"),
		// On lo: an address of the namespace as good as a dummy link's,
		// which not every kernel has.
		in(world, "ip", "addr", "add", outsideIP+"/32", "dev", "lo"),
		in(world, "ip", "addr", "add", metadataIP+"/32", "dev", "lo"),
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	var l net.Listener
	if err := netns.LoadNetNS(world).Do(func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", ":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			name := "outside"
			if strings.HasPrefix(conn.LocalAddr().String(), metadataIP+":") {
				name = "metadata"
			}
			// Read the request before answering: a close with unread
			// bytes is a reset, which can lose the answer.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			for r := bufio.NewReader(conn); ; {
				if line, err := r.ReadString('\n'); err != nil || line == "\r\n" {
					break
				}
			}
			fmt.Fprintf(conn, "HTTP/1.0 200 OK\r\n\r\n%s at %s from %s\n", name, conn.LocalAddr(), conn.RemoteAddr())
			conn.Close()
		}
	}()
}

// dialFrom connects to addr from inside the namespace at nsPath.
func dialFrom(nsPath, addr string) error {
	return netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
}

// httpGetFrom sends GET / to addr from inside the namespace at nsPath,
// with a Host header when host is set, and returns the answer.
func httpGetFrom(nsPath, addr, host string) (string, error) {
	var conn net.Conn
	err := netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if host == "" {
		host = addr
	}
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// linkLocal returns the IPv6 link-local address of eth0 in nsPath.
func linkLocal(t *testing.T, nsPath string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+nsPath, "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet6" && i+1 < len(f) {
			a, _, _ := strings.Cut(f[i+1], "/")
			return a
		}
	}
	t.Fatalf("no IPv6 link-local address on eth0 in %s: %q", nsPath, out)
	return ""
}

// rulesIn returns the filter tables of the namespace at nsPath, IPv4 and
// IPv6.
func rulesIn(t *testing.T, nsPath string) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("nsenter", "--net="+nsPath, "--", tool, "-t", "filter").CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v: %s", tool, nsPath, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// noPolicyLeft fails the test if the machine's filter tables still hold
// the policy chains of bridge, whose agent has stopped cleanly with no
// replica left, and removes them: a test leaves nothing behind.
func noPolicyLeft(t *testing.T, bridge string) {
	t.Helper()
	var left []string
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool, "-t", "filter").Output()
		if err != nil {
			t.Errorf("%s: %v", tool, err)
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			name, _, _ := strings.Cut(strings.TrimPrefix(line, ":"), " ")
			if strings.HasPrefix(line, ":") && network.Owned(bridge, name) {
				left = append(left, tool+" "+name)
			}
		}
	}
	if len(left) == 0 {
		return
	}
	t.Errorf("the agent of bridge %s left its policy chains: %v", bridge, left)
	fw, err := network.NewFirewall(bridge, nil)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = fw.Remove(ctx)
	}
	if err != nil {
		t.Errorf("remove the policy chains of %s: %v", bridge, err)
	}
}
