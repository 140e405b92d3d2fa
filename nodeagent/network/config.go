package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// Mode is how replicas are networked.
type Mode string

const (
	// ModeCNI gives each replica its own network namespace and an IP from
	// the node's subnet (bridge + host-local). The default: New fails,
	// with a *MissingPluginsError, where the plugins are not installed.
	ModeCNI Mode = "cni"
	// ModeHost runs replicas in the host's network namespace, each on an
	// allocated port of Config.HostIP, with no network isolation at all:
	// for machines without the plugins, and only when asked for.
	ModeHost Mode = "host"
)

// RequiredPlugins are the CNI plugin binaries ModeCNI runs.
var RequiredPlugins = []string{"bridge", "host-local", "loopback"}

// Config configures a Network. Make it with DefaultConfig.
type Config struct {
	// StateDir holds the attachment records (attachments/), the warm
	// pool's records (pool/), the pinned network namespaces (netns/) and
	// host-local's IP allocations (ipam/).
	// It must survive agent restarts (not a tmpfs the agent owns) so that a
	// new agent can adopt or tear down what the old one made. Required,
	// absolute.
	StateDir string
	// Mode is ModeCNI (the default) or ModeHost. Host networking is never
	// picked for the caller: a replica there reaches everything the node
	// does.
	Mode Mode
	// PluginDirs are searched for the CNI plugin binaries. Debian's
	// containernetworking-plugins installs to /usr/lib/cni; /opt/cni/bin is
	// the upstream default.
	PluginDirs []string
	// Subnet is the node's pod subnet, given by the control plane, e.g.
	// "10.244.1.0/24". The bridge takes its first address as the replicas'
	// gateway; host-local hands out the rest. Required in ModeCNI.
	Subnet string
	// BridgeName is the Linux bridge the replicas' veths join. Two agents
	// on one machine need two names: an agent owns its bridge and subnet
	// (see ClaimBridge).
	BridgeName string
	// NetworkName is the CNI network name. It keys host-local's store, the
	// CNI result cache (/var/lib/cni/results) and the masquerade chains, so
	// like BridgeName it must be unique per Network on a machine.
	NetworkName string
	// MTU of the bridge and veths; 0 takes the MTU of the interface that
	// holds the default route (a 1500 bridge on a 1400 uplink drops big
	// packets that leave the node), else 1500.
	MTU int
	// HostIP is where replicas listen in ModeHost. Loopback keeps them off
	// the network: only this node's gateway can reach them.
	HostIP string
	// PoolSize is how many network namespaces RunPool keeps ready, CNI ADD
	// done, for replica starts to take (ModeCNI). A start that finds one
	// skips the ADD (tens of milliseconds of plugins and iptables, which
	// also slow runc's create on a small node); a burst of starts past the
	// pool does the ADD itself as without one. Each holds an IP of the
	// subnet and a veth. 0 turns the pool off.
	PoolSize int
	// PoolRefillDelay is how long RunPool waits after a take before it
	// refills, so that the refill's ADD does not compete for the CPU with
	// the start that took the entry. Longer leaves the pool short for
	// longer after a start.
	PoolRefillDelay time.Duration
	// AddressProbeWait is how long the ARP probe of a replica's new
	// address listens for another answer after the replica's own (see
	// Setup): whatever else still holds the address on the bridge answers
	// in the same few microseconds, from the kernel. Each CNI ADD waits
	// this long, beside the container's creation; 0 takes the default.
	AddressProbeWait time.Duration
	// LockDir holds the bridges' claims (ClaimBridge): a lock file per
	// bridge and network namespace, with its holder. Agents exclude each
	// other only through the same LockDir; keep it on a tmpfs (a reboot
	// ends every claim anyway).
	LockDir string
	// Claim is the caller's hold on BridgeName, from ClaimBridge; nil
	// for a Network that shares its bridge (tests). Only with one does
	// RemoveStrays remove what the bridge holds that no record of StateDir
	// explains. The caller releases it, after the Network is done.
	Claim *Claim
	// Log receives the one line that says which mode is used, and cleanup
	// failures nobody returns to. Nil discards.
	Log *slog.Logger
	// Clock paces the warm pool: its refill delay and the back-off of a
	// failed refill. Nil is the wall clock.
	Clock clock.Clock
}

// DefaultConfig returns a configuration with every default filled but
// StateDir and Subnet.
func DefaultConfig() Config {
	return Config{
		Mode:             ModeCNI,
		PluginDirs:       []string{"/usr/lib/cni", "/opt/cni/bin"},
		BridgeName:       "surge0",
		NetworkName:      "surge",
		HostIP:           "127.0.0.1",
		PoolSize:         2,
		PoolRefillDelay:  250 * time.Millisecond,
		AddressProbeWait: 10 * time.Millisecond,
		LockDir:          "/run/surge",
	}
}

// withDefaults fills every zero field from DefaultConfig on a copy, but
// PoolSize and PoolRefillDelay, whose zero is a choice.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.PluginDirs = slices.Clone(c.PluginDirs)
	if len(c.PluginDirs) == 0 {
		c.PluginDirs = d.PluginDirs
	}
	if c.BridgeName == "" {
		c.BridgeName = d.BridgeName
	}
	if c.NetworkName == "" {
		c.NetworkName = d.NetworkName
	}
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.HostIP == "" {
		c.HostIP = d.HostIP
	}
	if c.AddressProbeWait == 0 {
		c.AddressProbeWait = d.AddressProbeWait
	}
	if c.LockDir == "" {
		c.LockDir = d.LockDir
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	c.Clock = clock.Or(c.Clock)
	return c
}

// cniName is what libcni accepts as a network name.
var cniName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Validate reports every bad field at once. Subnet is checked only when it
// is set or Mode is ModeCNI: ModeHost needs none.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("network StateDir %q: want an absolute path", c.StateDir))
	}
	switch c.Mode {
	case ModeCNI, ModeHost:
	default:
		errs = append(errs, fmt.Errorf("network Mode %q: want %q or %q", c.Mode, ModeCNI, ModeHost))
	}
	if c.Subnet != "" || c.Mode == ModeCNI {
		p, err := netip.ParsePrefix(c.Subnet)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("network Subnet %q: want a CIDR like 10.244.1.0/24", c.Subnet))
		case !p.Addr().Is4() || p.Bits() > 30:
			errs = append(errs, fmt.Errorf("network Subnet %q: want an IPv4 subnet of at least /30", c.Subnet))
		case p.Masked() != p:
			errs = append(errs, fmt.Errorf("network Subnet %q: host bits set, want %s", c.Subnet, p.Masked()))
		}
	}
	for _, d := range c.PluginDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("network PluginDirs %q: want absolute paths", d))
		}
	}
	if c.BridgeName == "" || len(c.BridgeName) > 15 {
		errs = append(errs, fmt.Errorf("network BridgeName %q: want 1 to 15 characters (a Linux interface name)", c.BridgeName))
	}
	if !cniName.MatchString(c.NetworkName) {
		errs = append(errs, fmt.Errorf("network NetworkName %q: want letters, digits, '_', '.', '-'", c.NetworkName))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("network MTU %d: want 0 (detect) or 576..65535", c.MTU))
	}
	if c.PoolSize < 0 || c.PoolSize > 64 {
		errs = append(errs, fmt.Errorf("network PoolSize %d: want 0 (no warm pool) to 64", c.PoolSize))
	}
	if c.AddressProbeWait < 0 || c.AddressProbeWait > time.Second {
		errs = append(errs, fmt.Errorf("network AddressProbeWait %s: want 0 (default) to 1s", c.AddressProbeWait))
	}
	if !filepath.IsAbs(c.LockDir) {
		errs = append(errs, fmt.Errorf("network LockDir %q: want an absolute path", c.LockDir))
	}
	if c.Claim != nil && (c.Claim.bridge != c.BridgeName || c.Mode != ModeCNI) {
		errs = append(errs, fmt.Errorf("network Claim of bridge %q: want a claim of BridgeName %q, in mode %q", c.Claim.bridge, c.BridgeName, ModeCNI))
	}
	if c.PoolRefillDelay < 0 {
		errs = append(errs, fmt.Errorf("network PoolRefillDelay %s: want >= 0", c.PoolRefillDelay))
	}
	if a, err := netip.ParseAddr(c.HostIP); err != nil || !a.Is4() {
		errs = append(errs, fmt.Errorf("network HostIP %q: want an IPv4 address", c.HostIP))
	}
	return errors.Join(errs...)
}
