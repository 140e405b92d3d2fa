package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/netns"
	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.StateDir = "/var/lib/surge/network"
	good.Subnet = "10.244.1.0/24"

	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error; none for a valid config
	}{
		{"defaults", func(*Config) {}, nil},
		{"host without subnet", func(c *Config) { c.Subnet = ""; c.Mode = ModeHost }, nil},
		{"cni (the default) without subnet", func(c *Config) { c.Subnet = "" }, []string{"Subnet"}},
		{"a claim of another bridge", func(c *Config) { c.Claim = &Claim{bridge: "other0"} }, []string{"Claim", "other0"}},
		{"every bad field at once", func(c *Config) {
			c.StateDir = "rel"
			c.Mode = "bogus"
			c.Subnet = "10.244.1.1/24"
			c.BridgeName = "a-very-long-bridge-name"
			c.NetworkName = "-x"
			c.MTU = 10
			c.HostIP = "::1"
			c.PluginDirs = []string{"lib/cni"}
			c.PoolSize = -1
			c.PoolRefillDelay = -time.Second
			c.AddressProbeWait = -time.Second
			c.LockDir = "run/surge"
		}, []string{"StateDir", "Mode", "Subnet", "BridgeName", "NetworkName", "MTU", "HostIP", "PluginDirs", "PoolSize",
			"PoolRefillDelay", "AddressProbeWait", "LockDir"}},
		{"no warm pool", func(c *Config) { c.PoolSize = 0 }, nil},
		{"ipv6 subnet", func(c *Config) { c.Subnet = "fd00::/64" }, []string{"IPv4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to name %s", err, w)
				}
			}
		})
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := store[Attachment]{dir: t.TempDir()}
	a := Attachment{ID: "r1", Mode: ModeCNI, NetNS: "/x/netns/cni-1", IP: "10.0.0.2"}
	b := Attachment{ID: "r0", Mode: ModeHost, IP: "127.0.0.1", Port: 4000}
	for _, x := range []Attachment{a, b} {
		if err := s.put(x); err != nil {
			t.Fatal(err)
		}
	}
	// A write that died before its rename is ignored and cleaned.
	if err := os.WriteFile(filepath.Join(s.dir, ".tmp-r2-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.list()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Attachment{b, a}, got); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	if err := s.remove("r1"); err != nil {
		t.Fatal(err)
	}
	if err := s.remove("r1"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.get("r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get removed = %v, want ErrNotFound", err)
	}
}

// needCNI skips the test, or fails it under CI=true, unless this process
// can make network namespaces and run the CNI plugins.
func needCNI(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if m := missingPlugins(DefaultConfig().PluginDirs); len(m) > 0 {
		missing = append(missing, "CNI plugins "+strings.Join(m, ","))
	}
	if _, err := os.Stat("/usr/sbin/iptables"); err != nil {
		missing = append(missing, "iptables")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and missing %s", strings.Join(missing, ", "))
	}
	t.Skipf("needs %s", strings.Join(missing, ", "))
}

// testCNIConfig returns a config on its own bridge, network name and
// subnet, so that this test package does not fight the containers tests or
// a real agent on the same machine; the bridge is deleted at the end.
func testCNIConfig(t *testing.T, octet int) Config {
	t.Helper()
	c := DefaultConfig()
	c.StateDir = t.TempDir()
	c.Mode = ModeCNI
	c.Subnet = "10.244." + strconv.Itoa(octet) + ".0/24"
	c.BridgeName = "surgetn" + strconv.Itoa(octet)
	c.NetworkName = "surge-test-net-" + strconv.Itoa(octet)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(c.BridgeName); err == nil {
			netlink.LinkDel(l)
		}
	})
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serveIn listens on port inside the namespace at nsPath and answers every
// connection with "hi"; it stops with the test.
func serveIn(t *testing.T, nsPath string, port int) {
	t.Helper()
	var l net.Listener
	err := netns.LoadNetNS(nsPath).Do(func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in netns: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
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

func dialRead(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestCNISetupTeardownAdopt(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 251)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode() != ModeCNI {
		t.Fatalf("Mode() = %q, want cni", n.Mode())
	}

	start := time.Now()
	a, err := n.Setup(ctx, "replica-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CNI setup took %v", time.Since(start))
	t.Cleanup(func() { n.Teardown(context.Background(), "replica-a") })
	ip, err := netip.ParseAddr(a.IP)
	if err != nil || !netip.MustParsePrefix(cfg.Subnet).Contains(ip) {
		t.Fatalf("IP %q not in %s", a.IP, cfg.Subnet)
	}
	if !netnsAlive(a.NetNS) || filepath.Dir(a.NetNS) != filepath.Join(cfg.StateDir, "netns") {
		t.Fatalf("netns %q not pinned under the state dir", a.NetNS)
	}

	// The host reaches a server in the namespace at the replica's IP.
	serveIn(t, a.NetNS, 8080)
	if got, err := dialRead(ctx, net.JoinHostPort(a.IP, "8080")); err != nil || got != "hi" {
		t.Fatalf("dial replica: %q, %v", got, err)
	}
	if err := n.Check(ctx, "replica-a"); err != nil {
		t.Fatalf("Check: %v", err)
	}

	// Setup again is idempotent: same namespace, same IP.
	again, err := n.Setup(ctx, "replica-a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, again); diff != "" {
		t.Errorf("second Setup (-first +second):\n%s", diff)
	}

	// A new Network on the same state dir (a restarted agent) adopts it.
	n2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := n2.Get("replica-a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("adopted (-want +got):\n%s", diff)
	}
	if err := n2.Teardown(ctx, "replica-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns file after Teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "ipam", cfg.NetworkName, a.IP)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host-local still holds %s: %v", a.IP, err)
	}
	if err := n2.Check(ctx, "replica-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Check after Teardown = %v, want ErrNotFound", err)
	}
	if err := n2.Teardown(ctx, "replica-a"); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestReserveThenSetup(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 247)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.Reserve(ctx, "res-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Teardown(context.Background(), "res-a") })
	if r.IP != "" || !netnsAlive(r.NetNS) {
		t.Fatalf("Reserve = %+v: want a pinned netns and no IP yet", r)
	}
	if again, err := n.Reserve(ctx, "res-a"); err != nil || again != r {
		t.Fatalf("second Reserve = %+v, %v; want %+v", again, err, r)
	}
	if err := n.Check(ctx, "res-a"); err == nil {
		t.Errorf("Check of a reserved attachment: want an error")
	}
	a, err := n.Setup(ctx, "res-a")
	if err != nil {
		t.Fatal(err)
	}
	if a.NetNS != r.NetNS || a.IP == "" {
		t.Fatalf("Setup after Reserve = %+v, want the reserved netns with an IP", a)
	}
	if err := n.Check(ctx, "res-a"); err != nil {
		t.Errorf("Check: %v", err)
	}

	// A reservation that is never set up is torn down like any other.
	r2, err := n.Reserve(ctx, "res-b")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Teardown(ctx, "res-b"); err != nil {
		t.Fatal(err)
	}
	if netnsAlive(r2.NetNS) {
		t.Errorf("reserved netns survived Teardown")
	}
}

func TestRemoveOrphans(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 250)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var atts []Attachment
	for _, id := range []string{"keep-me", "orphan"} {
		a, err := n.Setup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
		t.Cleanup(func() { n.Teardown(context.Background(), id) })
	}
	// A namespace pinned by an agent that died before writing its record.
	stray, err := netns.NewNetNS(filepath.Join(cfg.StateDir, "netns"))
	if err != nil {
		t.Fatal(err)
	}

	removed, err := n.RemoveOrphans(ctx, func(id string) bool { return id == "keep-me" })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"orphan"}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if netnsAlive(stray.GetPath()) || netnsAlive(atts[1].NetNS) {
		t.Errorf("stray or orphan netns still there")
	}
	if !netnsAlive(atts[0].NetNS) {
		t.Errorf("kept replica's netns removed")
	}
	left, err := n.Attachments()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ID != "keep-me" {
		t.Errorf("attachments after RemoveOrphans = %+v, want keep-me only", left)
	}
}

func TestPeerRoutes(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 249)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The first Setup makes the bridge, a directly connected network for
	// the route's gateway. No packet is sent.
	if _, err := n.Setup(ctx, "routes"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Teardown(context.Background(), "routes") })

	subnet := netip.MustParsePrefix("10.249.249.0/24")
	via := netip.MustParseAddr("10.244.249.250")
	if err := n.AddPeerRoute(subnet, via); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.RemovePeerRoute(subnet, via) })
	if err := n.AddPeerRoute(subnet, via); err != nil {
		t.Fatalf("second AddPeerRoute: %v", err)
	}
	got, err := n.PeerRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]PeerRoute{{subnet, via}}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("PeerRoutes (-want +got):\n%s", diff)
	}
	if err := n.RemovePeerRoute(subnet, via); err != nil {
		t.Fatal(err)
	}
	if err := n.RemovePeerRoute(subnet, via); err != nil {
		t.Fatalf("second RemovePeerRoute: %v", err)
	}
	if got, _ := n.PeerRoutes(); len(got) != 0 {
		t.Errorf("PeerRoutes after remove = %v", got)
	}
	if err := n.AddPeerRoute(netip.MustParsePrefix("10.249.249.1/24"), via); err == nil {
		t.Errorf("AddPeerRoute with host bits set: want an error")
	}
}

// TestHostNetworkOnlyWhenAsked: where the plugins are missing New fails,
// saying which and where; host networking is used only when configured.
func TestHostNetworkOnlyWhenAsked(t *testing.T) {
	ctx := testContext(t)
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.Subnet = "10.244.248.0/24"
	empty := t.TempDir()
	cfg.PluginDirs = []string{empty} // no plugins there
	_, err := New(cfg)
	var mp *MissingPluginsError
	if !errors.As(err, &mp) {
		t.Fatalf("New without plugins = %v, want a *MissingPluginsError", err)
	}
	if diff := cmp.Diff(&MissingPluginsError{Missing: RequiredPlugins, Dirs: []string{empty}}, mp); diff != "" {
		t.Errorf("MissingPluginsError (-want +got):\n%s", diff)
	}
	if err := CheckPlugins(cfg); !errors.As(err, &mp) {
		t.Errorf("CheckPlugins without plugins = %v, want a *MissingPluginsError", err)
	}

	cfg.Mode = ModeHost
	if err := CheckPlugins(cfg); err != nil {
		t.Errorf("CheckPlugins in host mode = %v, want nil", err)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode() != ModeHost {
		t.Fatalf("Mode() = %q, want host", n.Mode())
	}
	a, err := n.Setup(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Setup(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != "127.0.0.1" || a.NetNS != "" || a.Port == 0 || a.Port == b.Port {
		t.Fatalf("host attachments %+v, %+v: want 127.0.0.1, no netns, distinct ports", a, b)
	}
	l, err := net.Listen("tcp4", net.JoinHostPort(a.IP, strconv.Itoa(int(a.Port))))
	if err != nil {
		t.Fatalf("allocated port not free: %v", err)
	}
	l.Close()
	if again, _ := n.Setup(ctx, "h1"); again != a {
		t.Errorf("second Setup = %+v, want %+v", again, a)
	}
	if err := n.Check(ctx, "h1"); err != nil {
		t.Errorf("Check: %v", err)
	}
	for _, id := range []string{"h1", "h2"} {
		if err := n.Teardown(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := n.Attachments(); len(left) != 0 {
		t.Errorf("attachments after Teardown: %v", left)
	}
	if _, err := n.Setup(ctx, "../etc"); err == nil {
		t.Errorf("Setup with a path in the id: want an error")
	}
}

func TestSubnetClashNamesTheRoute(t *testing.T) {
	needCNI(t)
	// In a network namespace of its own, on a thread that never leaves it
	// (the goroutine ends locked, so the runtime discards the thread).
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := vnetns.New()
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		for _, l := range []netlink.Link{
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "other0"}},
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "surgetc0"}},
		} {
			if err := netlink.LinkAdd(l); err != nil {
				errc <- err
				return
			}
			if err := netlink.LinkSetUp(l); err != nil {
				errc <- err
				return
			}
		}
		for link, cidr := range map[string]string{"other0": "10.77.0.1/24", "surgetc0": "10.78.0.1/24"} {
			l, _ := netlink.LinkByName(link)
			addr, _ := netlink.ParseAddr(cidr)
			if err := netlink.AddrAdd(l, addr); err != nil {
				errc <- err
				return
			}
		}
		var errs []error
		err = subnetClash("10.77.0.0/24", "surgetc0")
		if err == nil || !strings.Contains(err.Error(), "10.77.0.0/24 on other0") {
			errs = append(errs, fmt.Errorf("a subnet on another link: %v, want the route and link named", err))
		}
		if err := subnetClash("10.77.0.0/16", "surgetc0"); err == nil {
			errs = append(errs, errors.New("a subnet holding another link's: no error"))
		}
		if err := subnetClash("10.78.0.0/24", "surgetc0"); err != nil {
			errs = append(errs, fmt.Errorf("the subnet of our own bridge (a restarted agent): %v", err))
		}
		if err := subnetClash("10.79.0.0/24", "surgetc0"); err != nil {
			errs = append(errs, fmt.Errorf("a free subnet: %v", err))
		}
		errc <- errors.Join(errs...)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
