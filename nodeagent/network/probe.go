package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A new address is checked before it is handed out: host-local knows only
// its own store, so whatever else still holds an address on the bridge (a
// replica some other agent left, a namespace someone attached by hand)
// would answer for it, and the gateway would reach it instead of the new
// replica. After each CNI ADD the node asks on the bridge, with an ARP
// probe (RFC 5227: sender address 0.0.0.0, so no neighbour cache learns
// anything), who has the new address. The replica's own eth0 answers; any
// other hardware address that answers, or an address of the node itself,
// means the address is taken: the ADD is undone, the address held in
// host-local's store under holdMarker so that no later ADD hands it out,
// and the ADD runs again. Held addresses are given back when the next
// Network starts on the state dir (and probed again when handed out).

// addTries bounds the ADDs of one Setup that land on taken addresses.
const addTries = 8

// holdMarker is the content of a host-local reservation file that holds
// an address something else answered at; host-local reads any content
// but its own "ID\r\nIFNAME" as someone else's.
const holdMarker = "surge: held, answered by "

// cniAdd runs the CNI ADD for id in the namespace at netnsPath and returns
// the replica's address, checked as above. On error the caller tears the
// attachment down. The plugins run to their end even when ctx ends: one
// killed half way leaves what its DEL then fails on (a masquerade chain
// it never made), and the namespace could not be released.
func (n *Network) cniAdd(ctx context.Context, id, netnsPath string) (string, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for try := 1; ; try++ {
		res, err := n.cni.Setup(pctx, id, netnsPath)
		if err != nil {
			return "", fmt.Errorf("CNI add: %w", err)
		}
		ip, mac, err := resultAddr(res)
		if err != nil {
			return "", err
		}
		other, err := n.answeredBy(ctx, ip, mac)
		if err != nil {
			return "", fmt.Errorf("probe new address %s: %w", ip, err)
		}
		if other == "" {
			return ip.String(), nil
		}
		n.cfg.Log.Warn("a new replica address still answers from elsewhere on the bridge; holding it and taking another",
			"bridge", n.cfg.BridgeName, "ip", ip, "answered_by", other, "id", id)
		if err := n.cni.Remove(pctx, id, netnsPath); err != nil {
			return "", fmt.Errorf("undo CNI add of taken address %s: %w", ip, err)
		}
		if err := n.holdAddress(ip, other); err != nil {
			return "", err
		}
		if try == addTries {
			return "", fmt.Errorf("%d addresses in a row answer from elsewhere on bridge %s (the last, %s, from %s)",
				addTries, n.cfg.BridgeName, ip, other)
		}
	}
}

// answeredBy returns what, other than the interface own, holds ip: "this
// node" for an address of the node's own, the hardware address of another
// answer to an ARP probe on the bridge, or "" for nothing. It waits up to
// a second for own's answer, then AddressProbeWait for others.
func (n *Network) answeredBy(ctx context.Context, ip netip.Addr, own net.HardwareAddr) (string, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list the node's addresses: %w", err)
	}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP.To4()); ok && x == ip {
			return "this node", nil
		}
	}
	br, err := netlink.LinkByName(n.cfg.BridgeName)
	if err != nil {
		return "", fmt.Errorf("bridge %s: %w", n.cfg.BridgeName, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return "", fmt.Errorf("ARP socket: %w", err)
	}
	defer unix.Close(fd)
	idx := br.Attrs().Index
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: idx}); err != nil {
		return "", fmt.Errorf("ARP socket on %s: %w", n.cfg.BridgeName, err)
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: idx, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err := unix.Sendto(fd, arpProbe(br.Attrs().HardwareAddr, ip), 0, to); err != nil {
		return "", fmt.Errorf("send ARP probe on %s: %w", n.cfg.BridgeName, err)
	}

	// I/O deadlines: real time, whatever the clock.
	deadline := time.Now().Add(time.Second)
	buf := make([]byte, 128)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return "", ctx.Err()
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		ready, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("ARP probe: %w", err)
		}
		if ready == 0 {
			continue
		}
		m, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		mac, ok := arpReply(buf[:m], ip)
		switch {
		case !ok:
		case bytes.Equal(mac, own):
			// The replica's own answer: anything else on the bridge
			// answers within the same moment.
			if d := time.Now().Add(n.cfg.AddressProbeWait); d.Before(deadline) {
				deadline = d
			}
		default:
			return mac.String(), nil
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpProbe is an ARP request from hardware address from for ip, with
// sender address 0.0.0.0 (RFC 5227's probe).
func arpProbe(from net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], from)
	// Sender address 0.0.0.0 (b[14:18]), target hardware address unknown
	// (b[18:24]).
	t := ip.As4()
	copy(b[24:28], t[:])
	return b
}

// arpReply returns the sender hardware address of b when b is an ARP
// reply from ip.
func arpReply(b []byte, ip netip.Addr) (net.HardwareAddr, bool) {
	if len(b) < 28 || binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != 0x0800 ||
		b[4] != 6 || b[5] != 4 || binary.BigEndian.Uint16(b[6:]) != 2 {
		return nil, false
	}
	sender, _ := netip.AddrFromSlice(b[14:18])
	if sender != ip {
		return nil, false
	}
	return net.HardwareAddr(bytes.Clone(b[8:14])), true
}

// ipamDir is host-local's store of this network: one file per address.
func (n *Network) ipamDir() string {
	return filepath.Join(n.cfg.StateDir, "ipam", n.cfg.NetworkName)
}

// holdAddress keeps host-local from handing out ip, which by answers.
func (n *Network) holdAddress(ip netip.Addr, by string) error {
	if err := os.MkdirAll(n.ipamDir(), 0o700); err != nil {
		return fmt.Errorf("hold address %s: %w", ip, err)
	}
	f, err := os.OpenFile(filepath.Join(n.ipamDir(), ip.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // taken by an ADD since: that one probes it too
	}
	if err != nil {
		return fmt.Errorf("hold address %s: %w", ip, err)
	}
	_, werr := f.WriteString(holdMarker + by)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("hold address %s: %w", ip, err)
	}
	return nil
}

// releaseHeldAddresses gives back every address holdAddress held: what
// answered there may be gone (RemoveStrays), and an address handed out
// again is probed again.
func (n *Network) releaseHeldAddresses() error {
	ents, err := os.ReadDir(n.ipamDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release held addresses: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue // host-local's lock and last_reserved_ip
		}
		p := filepath.Join(n.ipamDir(), e.Name())
		b, err := os.ReadFile(p)
		if err == nil && bytes.HasPrefix(b, []byte(holdMarker)) {
			err = os.Remove(p)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("release held address %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
