//go:build linux

package gossip_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vishvananda/netns"

	"github.com/surgeplatform/surge/gossip"
)

// The test's private link. Its addresses exist only inside the network
// namespaces the test makes; a blackhole route in the host's namespace for
// the test's life makes sure no packet for them leaves the machine even if
// a socket were opened in the wrong namespace.
const labSubnet = "10.213.0.0/29"

// TestNetnsAgentsFindEachOtherAndOutsiderCannotJoin is the test:
// two agents in two network namespaces find each other by gossip, and one
// without the key cannot join. Three namespaces hang off a bridge in a
// fourth: a (10.213.0.1), b (.2) and c (.3), every member on port 7946.
// a and b share the gossip key and find each other; a member in c with
// another key is refused by both, while a member in c with the right
// key joins (so the refusal is the key's doing, not the network's).
func TestNetnsAgentsFindEachOtherAndOutsiderCannotJoin(t *testing.T) {
	lab := newNetnsLab(t)
	nsA := lab.addNode("a", "10.213.0.1/29")
	nsB := lab.addNode("b", "10.213.0.2/29")
	nsC := lab.addNode("c", "10.213.0.3/29")

	a := startInNetns(t, nsA, "agent-a", "10.213.0.1", 7946, testKey)
	b := startInNetns(t, nsB, "agent-b", "10.213.0.2", 7946, testKey)
	join(t, b, a)
	for _, m := range []*member{a, b} {
		waitFor(t, 10*time.Second, m.name+" to see both agents", func() bool { return seesAlive(m, "agent-a", "agent-b") })
	}
	ep := endpoint("hello-00001-netns", "10.244.1.5", 8080)
	if err := a.g.Broadcast(ep); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "agent-b to learn agent-a's endpoint", func() bool { return hasReady(b, ep, "agent-a") })

	outsider := startInNetns(t, nsC, "outsider", "10.213.0.3", 7946, otherKey)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, seed := range []*member{a, b} {
		n, err := outsider.g.Join(ctx, []string{seed.addr})
		t.Logf("outsider joins %s: %v", seed.name, err)
		if !errors.Is(err, gossip.ErrJoin) || n != 0 {
			t.Errorf("outsider joins %s at %s: %d, %v; want 0, ErrJoin", seed.name, seed.addr, n, err)
		}
	}

	insider := startInNetns(t, nsC, "agent-c", "10.213.0.3", 7947, testKey)
	join(t, insider, a)
	for _, m := range []*member{a, b, insider} {
		waitFor(t, 10*time.Second, m.name+" to see agents a, b and c", func() bool { return seesAlive(m, "agent-a", "agent-b", "agent-c") })
	}
	for _, m := range []*member{a, b, insider} {
		for _, mem := range m.g.Members() {
			if mem.Name == "outsider" {
				t.Errorf("%s sees the outsider as %s", m.name, mem.State)
			}
		}
	}
	if got := aliveNames(outsider); len(got) != 1 {
		t.Errorf("the outsider sees %v", got)
	}
}

// netnsLab makes network namespaces joined by a bridge, and removes them
// when the test ends.
type netnsLab struct {
	t      *testing.T
	prefix string
	sw     string
	n      int
}

func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	var missing string
	if os.Geteuid() != 0 {
		missing = "root (to create network namespaces)"
	} else if _, err := exec.LookPath("ip"); err != nil {
		missing = "the ip command (Debian package iproute2)"
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test needs %s", missing)
		}
		t.Skipf("this test needs %s", missing)
	}
	l := &netnsLab{t: t, prefix: fmt.Sprintf("sgt%d", os.Getpid()%1000000)}
	l.sw = l.addNS("sw")
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	l.ip("route", "replace", "blackhole", labSubnet)
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", "blackhole", labSubnet).Run() })
	return l
}

// addNS creates a namespace, to be deleted when the test ends.
func (l *netnsLab) addNS(suffix string) string {
	l.t.Helper()
	name := l.prefix + suffix
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot create network namespace %s: %v: %s", name, err, out)
		if os.Getenv("CI") == "true" {
			l.t.Fatal(msg)
		}
		l.t.Skip(msg)
	}
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			l.t.Errorf("delete network namespace %s: %v: %s", name, err, out)
		}
	})
	return name
}

// addNode makes a namespace with eth0 at cidr, plugged into the bridge.
func (l *netnsLab) addNode(suffix, cidr string) string {
	l.t.Helper()
	ns := l.addNS(suffix)
	l.n++
	port := fmt.Sprintf("p%d", l.n)
	l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.sw, "link", "set", port, "master", "br0")
	l.ip("-n", l.sw, "link", "set", port, "up")
	l.ip("-n", ns, "addr", "add", cidr, "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	l.ip("-n", ns, "link", "set", "lo", "up")
	return ns
}

func (l *netnsLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs f on an OS thread of its own that it moves into network
// namespace ns. The thread is never moved back: its goroutine ends while
// still locked to it, so the Go runtime throws the thread away and no
// other goroutine ever runs in ns by accident. Sockets f creates stay in
// ns for their whole life, whichever thread uses them later.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: see above
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// netnsTransport is memberlist's UDP/TCP transport with its sockets in a
// network namespace. Its listeners are bound there when it is made; the
// TCP connections memberlist dials later (joins, state syncs, fallback
// pings) would be opened in whatever namespace the dialing goroutine's
// thread is in, so dials are made from inside ns too.
type netnsTransport struct {
	*memberlist.NetTransport
	ns string
}

var _ memberlist.NodeAwareTransport = (*netnsTransport)(nil)

func (t *netnsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *netnsTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(t.ns, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: timeout}).Dial("tcp", a.Addr)
		return err
	})
	return conn, err
}

// startInNetns runs a member whose sockets live in ns, at ip:port.
func startInNetns(t *testing.T, ns, name, ip string, port int, key []byte) *member {
	t.Helper()
	var nt *memberlist.NetTransport
	err := inNetns(ns, func() error {
		var err error
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip},
			BindPort:  port,
			Logger:    log.New(io.Discard, "", 0),
		})
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s at %s:%d: %v", ns, ip, port, err)
	}
	cfg := testConfig(t, name)
	cfg.Key = key
	cfg.Transport = &netnsTransport{NetTransport: nt, ns: ns}
	m := start(t, cfg)
	if want := net.JoinHostPort(ip, fmt.Sprint(port)); m.addr != want {
		t.Fatalf("%s advertises %s, want %s", name, m.addr, want)
	}
	return m
}
