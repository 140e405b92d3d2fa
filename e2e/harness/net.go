package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
)

// Net is the hosts' network: one bridge in the machine's own namespace,
// which carries the hosts' gateway address, and a namespace per host joined
// to it by a veth. Every name starts with the Net's prefix.
type Net struct {
	// Prefix starts every name the Net makes: namespaces, links, chains.
	Prefix string
	// Bridge is the bridge's name.
	Bridge string
	// Subnet is the hosts' subnet; Gateway, its last address, is on the
	// bridge.
	Subnet  netip.Prefix
	Gateway netip.Addr

	mu    sync.Mutex
	hosts []*Host
}

// Host is one simulated machine: a network namespace with one interface,
// eth0, on the Net's bridge.
type Host struct {
	// Name is the host's short name, e.g. "s1" or "a2".
	Name string
	// NS is the network namespace's name (ip netns), NSPath its file.
	NS, NSPath string
	// IP is eth0's address.
	IP netip.Addr
	// link is the veth's end on the bridge, in the machine's namespace.
	link string
	net  *Net
}

// chain is the iptables chain, in each host's namespace, that holds the
// faults the harness injects (partitions, packet loss).
const chain = "HARNESS-FAULTS"

// NewNet makes the bridge on a /24 no route of the machine covers yet.
// prefix must be short: link names hold 15 bytes, and a host's link is
// prefix+name.
func NewNet(prefix string) (*Net, error) {
	if len(prefix)+4 > 15 {
		return nil, fmt.Errorf("prefix %q is too long for link names", prefix)
	}
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	n := &Net{Prefix: prefix, Bridge: prefix + "br", Subnet: subnet}
	n.Gateway = lastAddr(subnet)
	if err := run("ip", "link", "add", n.Bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := runAll(
		[]string{"ip", "addr", "add", netip.PrefixFrom(n.Gateway, subnet.Bits()).String(), "dev", n.Bridge},
		[]string{"ip", "link", "set", n.Bridge, "up"},
	); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// RandomPrefix is a prefix no earlier run shares: "sh" and four hex digits.
func RandomPrefix() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return "sh" + hex.EncodeToString(b)
}

// AddHost makes a host: its namespace, with lo up, eth0 at the next
// address of the subnet, and a default route through the bridge.
func (n *Net) AddHost(name string) (*Host, error) {
	n.mu.Lock()
	ip := n.Subnet.Addr()
	for range len(n.hosts) + 1 {
		ip = ip.Next()
	}
	h := &Host{Name: name, NS: n.Prefix + "-" + name, IP: ip, link: n.Prefix + name, net: n}
	h.NSPath = "/run/netns/" + h.NS
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	ns := func(args ...string) []string { return append([]string{"ip", "-n", h.NS}, args...) }
	return h, runAll(
		[]string{"ip", "netns", "add", h.NS},
		[]string{"ip", "link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		[]string{"ip", "link", "set", h.link, "master", n.Bridge, "up"},
		ns("link", "set", "lo", "up"),
		ns("addr", "add", netip.PrefixFrom(ip, n.Subnet.Bits()).String(), "dev", "eth0"),
		ns("link", "set", "eth0", "up"),
		ns("route", "add", "default", "via", n.Gateway.String()),
		h.nsCmd("iptables", "-N", chain),
		h.nsCmd("iptables", "-I", "INPUT", "-j", chain),
		h.nsCmd("iptables", "-I", "OUTPUT", "-j", chain),
	)
}

// Hosts returns the hosts made so far.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// nsCmd is a command line that runs argv in the host's namespace.
func (h *Host) nsCmd(argv ...string) []string {
	return append([]string{"nsenter", "--net=" + h.NSPath, "--"}, argv...)
}

// Cut takes the host's link down: nothing reaches it or leaves it, as
// when a machine's cable is pulled. Its processes keep running.
func (h *Host) Cut() error { return run("ip", "link", "set", h.link, "down") }

// Restore brings the host's link back up.
func (h *Host) Restore() error { return run("ip", "link", "set", h.link, "up") }

// Partition drops every packet between the hosts of a and those of b, in
// both directions, until Heal.
func Partition(a, b []*Host) error {
	var cmds [][]string
	for _, x := range a {
		for _, y := range b {
			cmds = append(cmds,
				x.nsCmd("iptables", "-A", chain, "-s", y.IP.String(), "-j", "DROP"),
				x.nsCmd("iptables", "-A", chain, "-d", y.IP.String(), "-j", "DROP"),
				y.nsCmd("iptables", "-A", chain, "-s", x.IP.String(), "-j", "DROP"),
				y.nsCmd("iptables", "-A", chain, "-d", x.IP.String(), "-j", "DROP"),
			)
		}
	}
	return runAll(cmds...)
}

// Lose drops each packet to or from the given ports (TCP and UDP) of the
// host at random with probability p, until Heal: a lossy link for one
// protocol, gossip say, while the others stay whole.
func (h *Host) Lose(p float64, ports ...int) error {
	prob := strconv.FormatFloat(p, 'f', -1, 64)
	var cmds [][]string
	for _, port := range ports {
		for _, proto := range []string{"udp", "tcp"} {
			for _, dir := range []string{"--dport", "--sport"} {
				cmds = append(cmds, h.nsCmd("iptables", "-A", chain, "-p", proto, dir, strconv.Itoa(port),
					"-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"))
			}
		}
	}
	return runAll(cmds...)
}

// Heal removes the faults Partition and Lose put on the host.
func (h *Host) Heal() error { return run(h.nsCmd("iptables", "-F", chain)...) }

// Close deletes the hosts' namespaces and the bridge. The processes in
// them must be gone: a namespace a process still holds outlives its name.
func (n *Net) Close() error {
	var errs []error
	for _, h := range n.Hosts() {
		if err := run("ip", "netns", "del", h.NS); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
		// The veth goes with its namespace; delete our end in case the
		// namespace is still held.
		if l, err := netlink.LinkByName(h.link); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
	if l, err := netlink.LinkByName(n.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", n.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

// freeSubnet returns a /24 of 10.200.0.0/16 that no route of the machine
// overlaps.
func freeSubnet() (netip.Prefix, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list routes: %w", err)
	}
	var used []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue // the default route overlaps everything
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			used = append(used, netip.PrefixFrom(a, ones))
		}
	}
	for i := range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free /24 in 10.200.0.0/16")
}

// lastAddr is the subnet's last host address (.254 of a /24).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 2
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// run runs a command and returns its output in the error when it fails.
func run(argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// runAll runs commands in order and stops at the first that fails.
func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

// exists reports whether a path exists.
func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
