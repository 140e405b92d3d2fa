// Package network gives each Surge replica its own network namespace and an
// IP from the node's pod subnet, through CNI (bridge + host-local, driven by
// go-cni), and routes the subnets of peer nodes (host-gateway routing).
// Where the CNI plugins are missing it fails, unless asked for host
// networking (ModeHost): a replica then shares the host's namespace and
// listens on an allocated port of 127.0.0.1.
//
// An agent owns its bridge (ClaimBridge), removes at start what another
// left there (RemoveStrays), and never hands out an address that
// something on the bridge still answers at (the ARP probe of probe.go).
//
// Everything a Network makes is recorded under Config.StateDir, so a new
// agent can adopt the attachments of the one before it (same netns, same
// IP) or tear them down: CNI's DEL must be given the same id and netns path
// as the ADD, and the records keep both.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/netns"
	gocni "github.com/containerd/go-cni"
	"github.com/vishvananda/netlink"

	"github.com/surgeplatform/surge/internal/keyed"
)

// ErrNotFound is returned for an id that has no attachment.
var ErrNotFound = errors.New("network: not found")

// Attachment is how one replica is networked. It is what Setup returns and
// what the state dir records.
type Attachment struct {
	// ID is the replica's id, also CNI's container id.
	ID   string `json:"id"`
	Mode Mode   `json:"mode"`
	// NetNS is the path of the replica's pinned network namespace, to put
	// in the OCI spec; empty in ModeHost (the host's namespace).
	NetNS string `json:"netns,omitempty"`
	// IP is where the replica is reached: its own address in ModeCNI,
	// Config.HostIP in ModeHost. Empty only in a record of a Setup that
	// never finished.
	IP string `json:"ip,omitempty"`
	// Port is the host port allocated in ModeHost, which the replica must
	// listen on (the runtime passes it as PORT); 0 in ModeCNI, where the
	// replica listens on its own port in its own namespace.
	Port int32 `json:"port,omitempty"`
	// CNIID is the container id the CNI ADD was run with, when it is not
	// ID: a namespace taken from the warm pool was added under its pool
	// entry's id, and DEL and CHECK must be given the same.
	CNIID string `json:"cniId,omitempty"`
}

// cniID is the container id CNI knows a's namespace by.
func (a Attachment) cniID() string {
	if a.CNIID != "" {
		return a.CNIID
	}
	return a.ID
}

// Network sets up and tears down replica networking on one node. It is
// safe for concurrent use; calls for different ids run in parallel.
type Network struct {
	cfg      Config
	mode     Mode
	cni      gocni.CNI // nil in ModeHost
	records  store[Attachment]
	netnsDir string
	pool     pool

	ids keyed.Mutex
	// sweep is held shared from the moment Reserve creates a netns until
	// its record names it, and exclusively by RemoveStrayNamespaces while
	// it removes netns files that no record names.
	sweep sync.RWMutex
	// ports serializes host port allocation with its record write.
	ports sync.Mutex
}

// New checks cfg and creates the state directories. In ModeCNI it checks
// that the plugins are installed (a *MissingPluginsError says which are
// not) and that no other link routes the subnet, and gives back the
// addresses an earlier Network held because something else answered at
// them (see Setup). It logs the mode once. It does not touch the host's
// network: the bridge appears with the first Setup. ModeCNI needs root
// (namespaces, veths, iptables) from the first Setup on.
func New(cfg Config) (*Network, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Network{
		cfg:      cfg,
		mode:     cfg.Mode,
		records:  store[Attachment]{dir: filepath.Join(cfg.StateDir, "attachments")},
		netnsDir: filepath.Join(cfg.StateDir, "netns"),
	}
	var err error
	if n.pool, err = newPool(filepath.Join(cfg.StateDir, "pool")); err != nil {
		return nil, err
	}
	for _, d := range []string{n.records.dir, n.netnsDir, n.pool.records.dir, filepath.Join(cfg.StateDir, "ipam")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create network state dir: %w", err)
		}
	}

	switch n.mode {
	case ModeCNI:
		if err := CheckPlugins(cfg); err != nil {
			return nil, err
		}
		if err := subnetClash(cfg.Subnet, cfg.BridgeName); err != nil {
			return nil, err
		}
		if err := n.loadCNI(); err != nil {
			return nil, err
		}
		if err := n.releaseHeldAddresses(); err != nil {
			return nil, err
		}
		cfg.Log.Info("replica networking: CNI bridge", "bridge", cfg.BridgeName, "subnet", cfg.Subnet, "plugins", cfg.PluginDirs)
	case ModeHost:
		cfg.Log.Warn("replica networking: host network, as configured: each replica on an allocated port of " + cfg.HostIP +
			" with no network isolation (no per-replica IP, not reachable from other nodes)")
	}
	return n, nil
}

// MissingPluginsError says which CNI plugins ModeCNI needs and did not
// find.
type MissingPluginsError struct {
	Missing []string // plugin names, in RequiredPlugins' order
	Dirs    []string // where they were looked for
}

func (e *MissingPluginsError) Error() string {
	return fmt.Sprintf("network: CNI plugins %s not found in %s: install containernetworking-plugins, or use host networking",
		strings.Join(e.Missing, ", "), strings.Join(e.Dirs, " or "))
}

// CheckPlugins returns a *MissingPluginsError when cfg is in ModeCNI (the
// default) and a RequiredPlugins binary is in none of its PluginDirs.
func CheckPlugins(cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.Mode != ModeCNI {
		return nil
	}
	if missing := missingPlugins(cfg.PluginDirs); len(missing) > 0 {
		return &MissingPluginsError{Missing: missing, Dirs: cfg.PluginDirs}
	}
	return nil
}

// subnetClash returns an error naming the route that already covers part
// of subnet on a link other than bridge (another cluster's bridge, a VPN,
// a container network): replicas given addresses there would be
// unreachable, each start failing its readiness probe with a timeout.
// Peer routes, which this package manages, do not count.
func subnetClash(subnet, bridge string) error {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return nil // Validate has said so
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("network: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Protocol == PeerRouteProtocol {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		ones, _ := r.Dst.Mask.Size()
		if !ok || ones == 0 {
			continue
		}
		q := netip.PrefixFrom(addr, ones).Masked()
		if !p.Overlaps(q) {
			continue
		}
		name := fmt.Sprintf("link %d", r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		if name == bridge {
			continue
		}
		return fmt.Errorf("network: pod subnet %s overlaps the route to %s on %s: replicas there would be unreachable; remove %s or give this cluster another --pod-cidr", p, q, name, name)
	}
	return nil
}

func missingPlugins(dirs []string) []string {
	var missing []string
	for _, p := range RequiredPlugins {
		found := false
		for _, d := range dirs {
			if st, err := os.Stat(filepath.Join(d, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, p)
		}
	}
	return missing
}

// loadCNI builds the bridge network: the replica's eth0 on the bridge with
// an address from host-local, default route via the bridge, masquerade for
// traffic leaving the subnet, hairpin so a replica can reach itself through
// its own IP; plus lo, which runc leaves down in a namespace it is given.
func (n *Network) loadCNI() error {
	mtu := n.cfg.MTU
	if mtu == 0 {
		mtu = defaultRouteMTU()
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.cfg.NetworkName,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.cfg.BridgeName,
			"isGateway":   true,
			"ipMasq":      true,
			"hairpinMode": true,
			"mtu":         mtu,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.cfg.Subnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.cfg.StateDir, "ipam"),
			},
		}},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return err
	}
	c, err := gocni.New(gocni.WithPluginDir(n.cfg.PluginDirs), gocni.WithMinNetworkCount(2))
	if err != nil {
		return fmt.Errorf("network: init CNI: %w", err)
	}
	// The bridge network first: go-cni names interfaces by load order, and
	// reports the IP of eth0. Loopback comes from a config of our own, not
	// go-cni's WithLoNetwork, whose CNI version 0.3.1 has no CHECK (the
	// plugin brings up "lo" whatever interface name it is given).
	if err := c.Load(gocni.WithConfListBytes(b), gocni.WithConfListBytes(loConf)); err != nil {
		return fmt.Errorf("network: load CNI config: %w", err)
	}
	n.cni = c
	return nil
}

var loConf = []byte(`{"cniVersion": "1.0.0", "name": "surge-loopback", "plugins": [{"type": "loopback"}]}`)

// defaultRouteMTU returns the MTU of the default route's interface, or
// 1500.
func defaultRouteMTU() int {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 1500
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
			return l.Attrs().MTU
		}
	}
	return 1500
}

// Mode reports the mode New picked.
func (n *Network) Mode() Mode { return n.mode }

// validID is what both CNI and containerd accept, so a replica id can name
// the record file and be CNI's container id.
var validID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,75}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("network: id %q: want 1 to 76 letters, digits, '_', '.', '-', not starting with a symbol", id)
	}
	return nil
}

// Setup networks replica id and returns its attachment. It is idempotent:
// for an id that already has a complete attachment whose netns still
// exists it returns that one (same netns, same IP); for one Reserve made it
// runs the CNI ADD; anything else of that id (an agent killed mid-Setup,
// a namespace lost to a reboot) is torn down and made anew. A failed ADD
// leaves nothing behind.
//
// In ModeCNI it takes a namespace from the warm pool (see RunPool) when
// one is ready, else creates and pins a network namespace and runs CNI ADD
// in it (bridge and lo). In ModeHost it allocates a free port on
// Config.HostIP.
func (n *Network) Setup(ctx context.Context, id string) (Attachment, error) {
	if err := checkID(id); err != nil {
		return Attachment{}, err
	}
	unlock := n.ids.Lock(id)
	defer unlock()
	a, err := n.reserve(ctx, id)
	if err != nil || n.complete(a) {
		return a, err
	}
	return n.add(ctx, a)
}

// Reserve is the fast first half of Setup, for callers that want to start
// work in the namespace while the CNI ADD runs: in ModeCNI it creates,
// pins and records the namespace and returns the attachment without an
// IP; a later Setup (or Teardown) of the id finishes (or undoes) it. When
// the warm pool has a namespace ready it returns that one instead,
// complete with its IP: nothing is left to do. In ModeHost it is all of
// Setup. It is idempotent like Setup.
func (n *Network) Reserve(ctx context.Context, id string) (Attachment, error) {
	if err := checkID(id); err != nil {
		return Attachment{}, err
	}
	unlock := n.ids.Lock(id)
	defer unlock()
	return n.reserve(ctx, id)
}

// reserve is Reserve with id locked.
func (n *Network) reserve(ctx context.Context, id string) (Attachment, error) {
	if a, err := n.records.get(id); err == nil {
		if n.complete(a) || n.reserved(a) {
			return a, nil
		}
		if err := n.teardown(ctx, a); err != nil {
			return Attachment{}, fmt.Errorf("set up network for %s: remove partial attachment: %w", id, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return Attachment{}, err
	}
	if n.mode == ModeHost {
		return n.setupHost(id)
	}
	if a, ok := n.take(ctx, id); ok {
		return a, nil
	}
	return n.reserveCNI(id)
}

// complete reports whether a is a finished attachment still backed by the
// kernel.
func (n *Network) complete(a Attachment) bool {
	if a.IP == "" || a.Mode != n.mode {
		return false
	}
	if a.Mode == ModeHost {
		return a.Port > 0
	}
	return netnsAlive(a.NetNS)
}

// reserved reports whether a is a namespace Reserve made, awaiting its ADD.
func (n *Network) reserved(a Attachment) bool {
	return a.Mode == ModeCNI && n.mode == ModeCNI && a.IP == "" && netnsAlive(a.NetNS)
}

// netnsAlive reports whether path is a mounted network namespace.
func netnsAlive(path string) bool {
	if path == "" {
		return false
	}
	closed, err := netns.LoadNetNS(path).Closed()
	return err == nil && !closed
}

func (n *Network) reserveCNI(id string) (Attachment, error) {
	n.sweep.RLock()
	defer n.sweep.RUnlock()
	ns, err := netns.NewNetNS(n.netnsDir)
	if err != nil {
		return Attachment{}, fmt.Errorf("set up network for %s: %w", id, err)
	}
	a := Attachment{ID: id, Mode: ModeCNI, NetNS: ns.GetPath()}
	// The record goes down before the ADD: whatever the ADD leaves behind
	// (an IP in host-local's store, a veth, a masquerade rule) is then
	// findable by the next agent if this one dies half way.
	if err := n.records.put(a); err != nil {
		ns.Remove()
		return Attachment{}, fmt.Errorf("set up network for %s: %w", id, err)
	}
	return a, nil
}

// add runs the CNI ADD for a reserved attachment and records its IP; on
// failure it tears the attachment down.
func (n *Network) add(ctx context.Context, a Attachment) (_ Attachment, retErr error) {
	id := a.ID
	defer func() {
		if retErr != nil {
			// Clean up even when ctx ended: an IP left allocated is lost
			// until the next sweep.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := n.teardown(cctx, a); err != nil {
				n.cfg.Log.Warn("clean up failed network setup", "id", id, "err", err)
			}
		}
	}()

	ip, err := n.cniAdd(ctx, id, a.NetNS)
	if err != nil {
		return Attachment{}, fmt.Errorf("set up network for %s: %w", id, err)
	}
	a.IP = ip
	if err := n.records.put(a); err != nil {
		return Attachment{}, fmt.Errorf("set up network for %s: %w", id, err)
	}
	return a, nil
}

// resultAddr returns the address and hardware address of the replica's
// eth0 in a CNI result.
func resultAddr(res *gocni.Result) (netip.Addr, net.HardwareAddr, error) {
	iface, ok := res.Interfaces["eth0"]
	if !ok || len(iface.IPConfigs) == 0 {
		return netip.Addr{}, nil, errors.New("CNI result has no address on eth0")
	}
	mac, err := net.ParseMAC(iface.Mac)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("CNI result: eth0's hardware address %q: %w", iface.Mac, err)
	}
	for _, c := range iface.IPConfigs {
		if ip, ok := netip.AddrFromSlice(c.IP.To4()); ok {
			return ip, mac, nil
		}
	}
	return netip.Addr{}, nil, fmt.Errorf("CNI result has no IPv4 address on eth0: %v", iface.IPConfigs)
}

// setupHost allocates a port on HostIP that is free now and not held by
// another record. Another process may still take it before the replica
// binds it; the replica then fails to start and is restarted with a new
// port by a new Setup after Teardown.
func (n *Network) setupHost(id string) (Attachment, error) {
	n.ports.Lock()
	defer n.ports.Unlock()
	taken := map[int32]bool{}
	recs, err := n.records.list()
	if err != nil {
		n.cfg.Log.Warn("read attachment records", "err", err)
	}
	for _, r := range recs {
		taken[r.Port] = true
	}
	var port int32
	for range 16 {
		l, err := net.Listen("tcp4", net.JoinHostPort(n.cfg.HostIP, "0"))
		if err != nil {
			return Attachment{}, fmt.Errorf("set up network for %s: allocate port: %w", id, err)
		}
		p := int32(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		if !taken[p] {
			port = p
			break
		}
	}
	if port == 0 {
		return Attachment{}, fmt.Errorf("set up network for %s: allocate port: every port offered is held by another replica", id)
	}
	a := Attachment{ID: id, Mode: ModeHost, IP: n.cfg.HostIP, Port: port}
	if err := n.records.put(a); err != nil {
		return Attachment{}, fmt.Errorf("set up network for %s: %w", id, err)
	}
	return a, nil
}

// Get returns the recorded attachment of id, or ErrNotFound.
func (n *Network) Get(id string) (Attachment, error) {
	if err := checkID(id); err != nil {
		return Attachment{}, err
	}
	return n.records.get(id)
}

// Attachments returns every recorded attachment, complete or not, sorted
// by id.
func (n *Network) Attachments() ([]Attachment, error) {
	return n.records.list()
}

// Teardown undoes Setup for id: CNI DEL with the recorded netns path (or
// none, when the namespace is already gone, so that host-local still
// releases the IP), then unpins the namespace and drops the record. It is
// idempotent: an id without an attachment is not an error. When the DEL
// fails the record stays, so that a later Teardown or RemoveOrphans can
// retry it.
func (n *Network) Teardown(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	unlock := n.ids.Lock(id)
	defer unlock()
	a, err := n.records.get(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return n.teardown(ctx, a)
}

// teardown is Teardown with id locked.
func (n *Network) teardown(ctx context.Context, a Attachment) error {
	if err := n.release(ctx, a); err != nil {
		return err
	}
	return n.records.remove(a.ID)
}

// release undoes a's kernel side, leaving its record: CNI DEL with the
// recorded netns path (or none, when the namespace is already gone), then
// unpins the namespace.
func (n *Network) release(ctx context.Context, a Attachment) error {
	if a.Mode != ModeCNI {
		return nil
	}
	path := a.NetNS
	if !netnsAlive(path) {
		path = ""
	}
	if n.cni != nil {
		if err := n.cni.Remove(ctx, a.cniID(), path); err != nil {
			return fmt.Errorf("tear down network of %s: CNI del: %w", a.ID, err)
		}
		if err := removeMasqChain(ctx, n.cfg.NetworkName, a.cniID()); err != nil {
			return fmt.Errorf("tear down network of %s: %w", a.ID, err)
		}
	} else {
		n.cfg.Log.Warn("tear down network without CNI: its IP stays allocated in host-local's store", "id", a.ID, "ip", a.IP)
	}
	if a.NetNS != "" {
		if err := netns.LoadNetNS(a.NetNS).Remove(); err != nil {
			return fmt.Errorf("tear down network of %s: %w", a.ID, err)
		}
	}
	return nil
}

// Check verifies that id's attachment is still as Setup left it: the
// namespace exists and, in ModeCNI, CNI CHECK passes (the veth, the
// address and the routes are in place).
func (n *Network) Check(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	unlock := n.ids.Lock(id)
	defer unlock()
	a, err := n.records.get(id)
	if err != nil {
		return err
	}
	if !n.complete(a) {
		return fmt.Errorf("check network of %s: attachment incomplete or its netns %q is gone", id, a.NetNS)
	}
	if a.Mode == ModeCNI {
		if err := n.cni.Check(ctx, a.cniID(), a.NetNS); err != nil {
			return fmt.Errorf("check network of %s: %w", id, err)
		}
	}
	return nil
}

// RemoveOrphans tears down every attachment whose id keep rejects, the
// warm pool entries of agents that are gone (ReleaseStalePool), and
// unpins every namespace under the state dir that no record names (left
// by an agent killed inside Setup). keep is called with no lock held and
// may block; it must not call back into n. It returns the ids it removed;
// on errors it goes on with the others and returns them joined.
func (n *Network) RemoveOrphans(ctx context.Context, keep func(id string) bool) ([]string, error) {
	recs, err := n.records.list()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var removed []string
	for _, a := range recs {
		if keep(a.ID) {
			continue
		}
		if err := n.Teardown(ctx, a.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, a.ID)
	}
	if err := n.ReleaseStalePool(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.RemoveStrayNamespaces(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// RemoveStrayNamespaces unpins every namespace under the state dir that
// no record names, of a replica or of a warm pool entry: left by an agent
// killed inside Setup or a pool refill, between pinning the namespace and
// recording it. It waits for Setups and refills in that window.
func (n *Network) RemoveStrayNamespaces() error {
	n.sweep.Lock()
	defer n.sweep.Unlock()
	recs, err := n.records.list()
	if err != nil {
		// Without every record we cannot tell strays from live ones.
		return err
	}
	entries, err := n.pool.records.list()
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, a := range recs {
		named[a.NetNS] = true
	}
	for _, e := range entries {
		named[e.NetNS] = true
	}
	ents, err := os.ReadDir(n.netnsDir)
	if err != nil {
		return fmt.Errorf("list netns dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(n.netnsDir, e.Name())
		if named[p] {
			continue
		}
		if err := netns.LoadNetNS(p).Remove(); err != nil {
			errs = append(errs, fmt.Errorf("remove stray netns %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// PeerRouteProtocol marks the routes AddPeerRoute installs (a private
// rtnetlink protocol number), so that PeerRoutes finds them after an
// agent restart and leaves every other route alone.
const PeerRouteProtocol = netlink.RouteProtocol(0x53)

// PeerRoute is a route to a peer node's pod subnet through that node.
type PeerRoute struct {
	Subnet netip.Prefix
	Via    netip.Addr
}

// AddPeerRoute routes subnet (a peer node's pod subnet) via that node's
// address, replacing any route to subnet this package made before. via
// must be reachable on a directly connected network.
func (n *Network) AddPeerRoute(subnet netip.Prefix, via netip.Addr) error {
	r, err := peerRoute(subnet, via)
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("add route to %s via %s: %w", subnet, via, err)
	}
	return nil
}

// RemovePeerRoute removes the route AddPeerRoute made; a missing route is
// not an error.
func (n *Network) RemovePeerRoute(subnet netip.Prefix, via netip.Addr) error {
	r, err := peerRoute(subnet, via)
	if err != nil {
		return err
	}
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, errNoRoute) {
		return fmt.Errorf("remove route to %s via %s: %w", subnet, via, err)
	}
	return nil
}

// PeerRoutes lists the routes AddPeerRoute made, including those of an
// earlier agent.
func (n *Network) PeerRoutes() ([]PeerRoute, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: PeerRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list peer routes: %w", err)
	}
	var out []PeerRoute
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		p, ok := netipPrefix(r.Dst)
		via, ok2 := netip.AddrFromSlice(r.Gw.To4())
		if ok && ok2 {
			out = append(out, PeerRoute{Subnet: p, Via: via})
		}
	}
	slices.SortFunc(out, func(a, b PeerRoute) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out, nil
}

func peerRoute(subnet netip.Prefix, via netip.Addr) (*netlink.Route, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Masked() != subnet {
		return nil, fmt.Errorf("peer route: subnet %s: want an IPv4 network address like 10.244.2.0/24", subnet)
	}
	if !via.Is4() {
		return nil, fmt.Errorf("peer route: via %s: want an IPv4 address", via)
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: subnet.Addr().AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)},
		Gw:       via.AsSlice(),
		Protocol: PeerRouteProtocol,
	}, nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits), true
}

// errNoRoute is what the kernel answers RTM_DELROUTE for a missing route.
const errNoRoute = syscall.ESRCH
