package network

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/netns"
	cnins "github.com/containernetworking/plugins/pkg/ns"
)

// needIptables skips the test, or fails it under CI=true, unless this
// process can make network namespaces and run iptables in them.
func needIptables(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"iptables-restore", "ip6tables-restore", "ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and missing %s", strings.Join(missing, ", "))
	}
	t.Skipf("needs %s", strings.Join(missing, ", "))
}

// testNode is a node made of network namespaces, all under the test's
// temporary directory and removed with it: its host, with the replicas'
// bridge; three replicas on the bridge; and "world", one namespace behind
// the host that holds a peer node (with replicas of its own), a server on
// the Internet and a metadata service, each an address on its loopback
// (this is as good as a dummy link, which not every kernel has).
type testNode struct {
	t                 *testing.T
	host, world       string
	a1, a2, b         string // replica namespaces: a1 and a2 of function a, b of function b
	bridge            string
	input             PolicyInput
	replicaIP         map[string]string // by namespace
	hostIP, peerIP    string
	outside, metadata string
	remoteA, remoteB  string // replicas on the peer node
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	dir := t.TempDir()
	n := &testNode{t: t, bridge: "sgpt0", replicaIP: map[string]string{},
		hostIP: "10.250.9.1", peerIP: "10.250.9.2", outside: "198.51.100.1", metadata: "169.254.169.254",
		remoteA: "10.250.2.5", remoteB: "10.250.2.6"}
	mk := func() string {
		ns, err := netns.NewNetNS(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Remove() })
		return ns.GetPath()
	}
	n.host, n.world, n.a1, n.a2, n.b = mk(), mk(), mk(), mk(), mk()
	in := func(ns string, argv ...string) []string {
		return append([]string{"nsenter", "--net=" + ns, "--"}, argv...)
	}
	cmds := [][]string{
		in(n.host, "ip", "link", "set", "lo", "up"),
		in(n.host, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"),
		in(n.host, "ip", "link", "add", n.bridge, "type", "bridge"),
		in(n.host, "ip", "addr", "add", "10.250.1.1/24", "dev", n.bridge),
		in(n.host, "ip", "link", "set", n.bridge, "up"),
		// The world: the peer node at 10.250.9.2 with its pod subnet
		// 10.250.2.0/24, the Internet, the metadata service.
		in(n.host, "ip", "link", "add", "sgptw", "type", "veth", "peer", "name", "eth0", "netns", n.world),
		in(n.host, "ip", "addr", "add", n.hostIP+"/24", "dev", "sgptw"),
		in(n.host, "ip", "link", "set", "sgptw", "up"),
		in(n.world, "ip", "link", "set", "lo", "up"),
		in(n.world, "ip", "addr", "add", n.peerIP+"/24", "dev", "eth0"),
		in(n.world, "ip", "link", "set", "eth0", "up"),
	}
	for _, a := range []string{n.outside, n.metadata, n.remoteA, n.remoteB} {
		cmds = append(cmds,
			in(n.world, "ip", "addr", "add", a+"/32", "dev", "lo"),
			in(n.host, "ip", "route", "add", a+"/32", "via", n.peerIP))
	}
	cmds = append(cmds, in(n.world, "ip", "route", "add", "10.250.1.0/24", "via", n.hostIP))
	for i, r := range []string{n.a1, n.a2, n.b} {
		ip := fmt.Sprintf("10.250.1.%d", i+2)
		n.replicaIP[r] = ip
		veth := fmt.Sprintf("sgptv%d", i)
		cmds = append(cmds,
			in(n.host, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", r),
			in(n.host, "ip", "link", "set", veth, "master", n.bridge, "up"),
			in(r, "ip", "link", "set", "lo", "up"),
			in(r, "ip", "addr", "add", ip+"/24", "dev", "eth0"),
			in(r, "ip", "link", "set", "eth0", "up"),
			in(r, "ip", "route", "add", "default", "via", "10.250.1.1"),
		)
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	n.input = PolicyInput{
		Bridge:       n.bridge,
		Subnet:       netip.MustParsePrefix("10.250.1.0/24"),
		PodSubnets:   prefixes("10.250.1.0/24", "10.250.2.0/24"),
		Peers:        addrs(n.peerIP),
		GatewayPorts: []uint16{8080},
		Nameservers:  addrs(n.metadata),
		Replicas: []ReplicaAddr{
			rep(n.replicaIP[n.a1], "default/a"), rep(n.replicaIP[n.a2], "default/a"), rep(n.remoteA, "default/a"),
			rep(n.replicaIP[n.b], "default/b"), rep(n.remoteB, "default/b"),
		},
	}
	// Everyone answers on their ports: the replicas at 8080, the host at
	// 8080 (its gateway) and 7946 (gossip, say), the world at 80, 53 and
	// 8080 (the peer's gateway) on every address it has.
	for _, r := range []string{n.a1, n.a2, n.b} {
		serveAny(t, r, 8080)
	}
	serveAny(t, n.host, 8080)
	serveAny(t, n.host, 7946)
	for _, p := range []int{80, 53, 8080} {
		serveAny(t, n.world, p)
	}
	return n
}

// serveAny listens on port, IPv4 and IPv6, inside the namespace at
// nsPath and answers every connection with "hi"; it stops with the test.
func serveAny(t *testing.T, nsPath string, port int) {
	t.Helper()
	var l net.Listener
	err := netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in netns: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

// dialFrom connects from inside the namespace at nsPath (from source
// address src when set) and returns what the server said.
func dialFrom(nsPath, src, addr string) error {
	return netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error {
		d := net.Dialer{Timeout: 3 * time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "hi" {
			err = fmt.Errorf("read %q, want hi", b)
		}
		return err
	})
}

// in runs f inside the namespace at nsPath: iptables and the sysctls it
// reads are the namespace's.
func (n *testNode) in(nsPath string, f func() error) error {
	return netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error { return f() })
}

func (n *testNode) iptablesSave() string {
	n.t.Helper()
	var out []byte
	err := n.in(n.host, func() error {
		a, err := exec.Command("iptables-save", "-t", "filter").Output()
		if err != nil {
			return err
		}
		b, err := exec.Command("ip6tables-save", "-t", "filter").Output()
		out = append(a, b...)
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return string(out)
}

// linkLocal returns the IPv6 link-local address of eth0 in nsPath,
// zoned for a dial from a namespace whose interface is also eth0.
func linkLocalOf(t *testing.T, nsPath string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+nsPath, "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet6" && i+1 < len(f) {
			a, _, _ := strings.Cut(f[i+1], "/")
			return a + "%eth0"
		}
	}
	t.Fatalf("no link-local address on eth0 in %s: %s", nsPath, out)
	return ""
}

// TestFirewallEnforcesPolicy applies the policy to a node made of
// namespaces and tries every flow from a replica's namespace, and from
// beyond the node: each allowed flow goes through, each forbidden one
// fails — and every one of them went through before the policy, so that
// neither a policy that allows all nor one that denies all passes.
func TestFirewallEnforcesPolicy(t *testing.T) {
	needIptables(t)
	n := newTestNode(t)
	ctx := testContext(t)
	hostPort := func(h string, p int) string { return net.JoinHostPort(h, fmt.Sprint(p)) }
	flows := []struct {
		name      string
		from, src string // namespace, and source address when not its own
		to        string
		allowed   bool
	}{
		{"own function, same node", n.a1, "", hostPort(n.replicaIP[n.a2], 8080), true},
		{"own function, other node", n.a1, "", hostPort(n.remoteA, 80), true},
		{"itself", n.a1, "", hostPort(n.replicaIP[n.a1], 8080), true},
		{"the gateway on the node", n.a1, "", hostPort("10.250.1.1", 8080), true},
		{"the gateway on the node's address", n.a1, "", hostPort(n.hostIP, 8080), true},
		{"the gateway on a peer node", n.a1, "", hostPort(n.peerIP, 8080), true},
		{"the outside world", n.a1, "", hostPort(n.outside, 80), true},
		{"the name server at 53", n.a1, "", hostPort(n.metadata, 53), true},
		{"another function, same node", n.a1, "", hostPort(n.replicaIP[n.b], 8080), false},
		{"another function, other node", n.a1, "", hostPort(n.remoteB, 80), false},
		{"another function over IPv6 link-local", n.a1, "", hostPort(linkLocalOf(t, n.b), 8080), false},
		{"the node's port on the bridge", n.a1, "", hostPort("10.250.1.1", 7946), false},
		{"the node's port on its address", n.a1, "", hostPort(n.hostIP, 7946), false},
		{"a peer node's port", n.a1, "", hostPort(n.peerIP, 80), false},
		{"the metadata service", n.a1, "", hostPort(n.metadata, 80), false},
		{"the peer node (its gateway) to a replica", n.world, "", hostPort(n.replicaIP[n.a1], 8080), true},
		{"the node's host to a replica", n.host, "", hostPort(n.replicaIP[n.b], 8080), true},
		{"the world to a replica", n.world, n.outside, hostPort(n.replicaIP[n.a1], 8080), false},
	}
	// Before the policy, every flow goes through (polled: IPv6 addresses
	// are usable once duplicate address detection is over).
	for _, f := range flows {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := dialFrom(f.from, f.src, f.to)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("before the policy, %s (%s): %v", f.name, f.to, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	fw, err := NewFirewall(n.bridge, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The bridge's traffic must reach iptables: Apply turns it on when it
	// is off, and Remove turns it off again.
	if err := n.in(n.host, func() error {
		return os.WriteFile(bridgeNetfilter[0], []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	p := BuildPolicy(n.input)
	for range 2 { // idempotent
		if err := n.in(n.host, func() error { return fw.Apply(ctx, p) }); err != nil {
			t.Fatal(err)
		}
	}
	save := n.iptablesSave()
	for _, j := range append(p.Jumps, p.Jumps6...) {
		if c := strings.Count(save, "-A "+j.From+" "+j.Rule+"\n"); c != 1 {
			t.Errorf("jump %q appears %d times, want once:\n%s", j.Rule, c, save)
		}
	}
	for _, f := range flows {
		err := dialFrom(f.from, f.src, f.to)
		if f.allowed && err != nil {
			t.Errorf("%s (%s): %v, want it to go through", f.name, f.to, err)
		}
		if !f.allowed && err == nil {
			t.Errorf("%s (%s) went through, want it refused", f.name, f.to)
		}
	}

	// Function b's last replica here goes: its chain goes with it.
	in2 := n.input
	in2.Replicas = in2.Replicas[:3]
	if err := n.in(n.host, func() error { return fw.Apply(ctx, BuildPolicy(in2)) }); err != nil {
		t.Fatal(err)
	}
	if save := n.iptablesSave(); strings.Contains(save, "SURGE-sgpt0-F2") || !strings.Contains(save, "SURGE-sgpt0-F1") {
		t.Errorf("after b's replica went, want chain F1 and no F2:\n%s", save)
	}

	var sysctl []byte
	if err := n.in(n.host, func() error {
		if err := fw.Remove(ctx); err != nil {
			return err
		}
		var err error
		sysctl, err = os.ReadFile(bridgeNetfilter[0])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if save := n.iptablesSave(); strings.Contains(save, "SURGE-") {
		t.Errorf("after Remove, rules left:\n%s", save)
	}
	if strings.TrimSpace(string(sysctl)) != "0" {
		t.Errorf("after Remove, %s = %q, want it back at 0", bridgeNetfilter[0], sysctl)
	}
	if err := n.in(n.host, func() error { return fw.Remove(ctx) }); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestNewFirewallRefusesOddBridgeNames(t *testing.T) {
	for _, name := range []string{"", "-x", "a b", `a"b`, "a-very-long-bridge"} {
		if _, err := NewFirewall(name, nil); err == nil {
			t.Errorf("NewFirewall(%q) = nil error, want one", name)
		}
	}
	if _, err := NewFirewall("surge-e2e0", nil); err != nil {
		t.Errorf("NewFirewall(surge-e2e0) = %v", err)
	}
}
