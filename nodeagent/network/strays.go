package network

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// An agent that owns its bridge (ClaimBridge) removes at start what is on
// the bridge that no record of its own explains: the replicas of an agent
// that ran on another state dir and stopped without stopping them (a
// crash, a wiped data dir), with their veths, network namespaces, shims
// and masquerade rules. They would otherwise answer at the addresses this
// agent hands out again, or hold them so that no new replica is reachable.
//
// A veth on the bridge leads to a network namespace, which the kernel
// names here by an id (IFLA_LINK_NETNSID). The namespaces of this state
// dir's records are given their ids the same way; every veth whose other
// end is in none of them is a stray. Its namespace is found among the
// namespaces pinned on the machine (nsfs mounts) and those of running
// processes, by id.

// bridgePort is a link enslaved to the bridge, as the sweep sees it.
type bridgePort struct {
	Name string
	Veth bool
	// PeerNsID is the id, in this namespace, of the namespace that holds
	// a veth's other end; -1 when it is here.
	PeerNsID int
}

// nsRef is a network namespace found on the machine.
type nsRef struct {
	Ino  uint64
	NsID int      // its id in this namespace; -1 when it has none
	Pins []string // nsfs mount points that keep it
	PIDs []int    // processes in it
}

// stray is a veth on the bridge that no record explains, with the
// namespace of its other end (Ino 0 when none was found).
type stray struct {
	Port bridgePort
	NS   nsRef
}

// findStrays is the decision: the veths among ports whose other end is in
// a namespace other than this one (self) and none of explained (the ids
// of the records' namespaces), each with its namespace out of found.
// Other links on the bridge (not veths, or veths with both ends here) are
// someone's choice, not a replica: they stay.
func findStrays(ports []bridgePort, explained map[int]bool, found []nsRef, self uint64) []stray {
	var out []stray
	for _, p := range ports {
		if !p.Veth || p.PeerNsID < 0 || explained[p.PeerNsID] {
			continue
		}
		s := stray{Port: p}
		if i := slices.IndexFunc(found, func(n nsRef) bool { return n.NsID == p.PeerNsID }); i >= 0 {
			if found[i].Ino == self {
				continue
			}
			s.NS = found[i]
		}
		out = append(out, s)
	}
	return out
}

// Stray is what RemoveStrays removed: a veth on the bridge, the network
// namespace at its other end, and what ran there.
type Stray struct {
	// Veth is the bridge's end of the pair.
	Veth string
	// NetNS is the namespace's inode (as in /proc/PID/ns/net); Pins the
	// mount points that kept it.
	NetNS uint64
	Pins  []string
	// ContainerID is the CNI container id the namespace was added under,
	// when the CNI cache still knew it: its DEL removed the veth and the
	// masquerade rules. Without it only the veth is deleted.
	ContainerID string
	// Killed are the processes killed: those in the namespace, and the
	// containerd shims that ran them.
	Killed []int
	// Unmounted are the root filesystems of the shims' containers,
	// unmounted once they were gone (a shim unmounts its container's
	// when containerd deletes the task; a killed one never will).
	Unmounted []string
}

// RemoveStrays removes what the bridge holds that no record of this
// state dir explains (see above): for each stray veth, CNI DEL under the
// container id the CNI cache recorded for its namespace (else the veth is
// deleted), then SIGKILL to every process in the namespace and to the
// containerd shims that are their parents, then the namespace's pins and,
// once the processes are gone, their containers' root filesystems and
// emptied cgroups. It needs the
// bridge's claim (Config.Claim), and runs once at start, before any
// replica starts; warm pool refills wait for it. It goes on past errors
// and returns what it removed with the errors joined.
func (n *Network) RemoveStrays(ctx context.Context) ([]Stray, error) {
	if n.mode != ModeCNI {
		return nil, nil
	}
	if n.cfg.Claim == nil {
		return nil, errors.New("network: remove strays: the bridge is not claimed (Config.Claim)")
	}
	n.sweep.Lock()
	defer n.sweep.Unlock()

	// Records first, then links: a veth listed was made after its record
	// was written (Reserve and refills write it before the ADD, and wait
	// for this lock to make the namespace).
	recs, err := n.records.list()
	if err != nil {
		return nil, fmt.Errorf("network: remove strays: %w", err)
	}
	entries, err := n.pool.records.list()
	if err != nil {
		return nil, fmt.Errorf("network: remove strays: %w", err)
	}
	// Last, once the strays' DELs have run (a DEL fails on a chain
	// already gone): the masquerade rules the bridge plugin made for
	// attachments that no record explains, whether or not their
	// namespaces are still there.
	ids := map[string]bool{}
	for _, a := range recs {
		ids[a.cniID()] = true
	}
	for _, e := range entries {
		ids[e.ID] = true
	}
	defer func() {
		if err := removeStrayMasqChains(ctx, n.cfg.NetworkName, ids); err != nil {
			n.cfg.Log.Warn("remove masquerade rules another agent left", "network", n.cfg.NetworkName, "err", err)
		}
	}()
	ports, err := listPorts(n.cfg.BridgeName)
	if err != nil || len(ports) == 0 {
		return nil, err
	}
	paths := make([]string, 0, len(recs)+len(entries))
	for _, a := range recs {
		paths = append(paths, a.NetNS)
	}
	for _, e := range entries {
		paths = append(paths, e.NetNS)
	}
	explained := map[int]bool{}
	for _, p := range paths {
		if id, ok := nsIDOf(p); p != "" && ok {
			explained[id] = true
		}
	}
	self, err := inode("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("network: remove strays: %w", err)
	}
	strays := findStrays(ports, explained, nil, self)
	if len(strays) == 0 {
		return nil, nil
	}
	strays = findStrays(ports, explained, scanNamespaces(), self)
	cache := cniCache(n.cfg.NetworkName)

	var (
		removed []Stray
		errs    []error
	)
	for _, s := range strays {
		r, err := n.removeStray(ctx, s, cache)
		if err != nil {
			errs = append(errs, fmt.Errorf("remove veth %s from bridge %s: %w", s.Port.Name, n.cfg.BridgeName, err))
			continue
		}
		n.cfg.Log.Warn("removed a replica another agent left on the bridge", "bridge", n.cfg.BridgeName, "veth", r.Veth,
			"netns", r.NetNS, "pins", r.Pins, "container_id", r.ContainerID, "killed", r.Killed, "unmounted", r.Unmounted)
		removed = append(removed, r)
	}
	return removed, errors.Join(errs...)
}

// removeStray removes one stray; see RemoveStrays.
func (n *Network) removeStray(ctx context.Context, s stray, cache map[uint64]string) (Stray, error) {
	r := Stray{Veth: s.Port.Name, NetNS: s.NS.Ino, Pins: s.NS.Pins}
	// A path that reaches the namespace, for the DEL: a pin, or a process.
	path := ""
	if len(s.NS.Pins) > 0 {
		path = s.NS.Pins[0]
	} else if len(s.NS.PIDs) > 0 {
		path = "/proc/" + strconv.Itoa(s.NS.PIDs[0]) + "/ns/net"
	}
	var errs []error
	if id := cache[s.NS.Ino]; id != "" && path != "" {
		if err := n.cni.Remove(ctx, id, path); err != nil {
			n.cfg.Log.Warn("CNI del of a stray namespace; deleting its veth instead", "container_id", id, "err", err)
		} else {
			r.ContainerID = id
		}
	}
	if l, err := netlink.LinkByName(s.Port.Name); err == nil {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete veth: %w", err))
		}
	}
	if s.NS.Ino != 0 {
		killed, unmounted, err := killNamespace(ctx, s.NS.Ino)
		r.Killed, r.Unmounted = killed, unmounted
		errs = append(errs, err)
		for _, p := range s.NS.Pins {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unpin netns %s: %w", p, err))
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove netns pin %s: %w", p, err))
			}
		}
	}
	return r, errors.Join(errs...)
}

// listPorts lists the links enslaved to bridge; none when it does not
// exist. Listing links gives every veth's peer namespace an id here.
func listPorts(bridge string) ([]bridgePort, error) {
	br, err := netlink.LinkByName(bridge)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("network: bridge %s: %w", bridge, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("network: list links: %w", err)
	}
	var out []bridgePort
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index {
			continue
		}
		out = append(out, bridgePort{Name: a.Name, Veth: l.Type() == "veth", PeerNsID: a.NetNsID})
	}
	return out, nil
}

// nsIDOf is the id, in this namespace, of the namespace at path.
func nsIDOf(path string) (int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	id, err := netlink.GetNetNsIdByFd(int(f.Fd()))
	return id, err == nil && id >= 0
}

// scanNamespaces lists the network namespaces on the machine that a pin
// (an nsfs mount in this mount namespace) or a process keeps, with their
// ids here. Those it cannot read are left out.
func scanNamespaces() []nsRef {
	byIno := map[uint64]*nsRef{}
	get := func(ino uint64) *nsRef {
		r := byIno[ino]
		if r == nil {
			r = &nsRef{Ino: ino, NsID: -1}
			byIno[ino] = r
		}
		return r
	}
	for _, p := range netnsPins() {
		if ino, err := inode(p); err == nil {
			r := get(ino)
			r.Pins = append(r.Pins, p)
		}
	}
	for _, pid := range pids() {
		if ino, err := inode("/proc/" + strconv.Itoa(pid) + "/ns/net"); err == nil {
			r := get(ino)
			r.PIDs = append(r.PIDs, pid)
		}
	}
	out := make([]nsRef, 0, len(byIno))
	for _, r := range byIno {
		paths := slices.Clone(r.Pins)
		for _, pid := range r.PIDs {
			paths = append(paths, "/proc/"+strconv.Itoa(pid)+"/ns/net")
		}
		for _, p := range paths {
			if id, ok := nsIDOf(p); ok {
				r.NsID = id
				break
			}
		}
		out = append(out, *r)
	}
	return out
}

// netnsPins lists the mount points of network namespaces in this mount
// namespace.
func netnsPins() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "nsfs" && strings.HasPrefix(f[3], "net:[") {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// mountPoints is the set of mount points in this mount namespace.
func mountPoints() map[string]bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 5 {
			out[unescapeMount(f[4])] = true
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pids lists the processes on the machine.
func pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// cniCache maps the namespaces (by inode) that the CNI cache
// (libcni.CacheDir/results) records an ADD of network in to the container
// id of that ADD. A namespace whose pin is gone is not found.
func cniCache(network string) map[uint64]string {
	dir := filepath.Join(libcni.CacheDir, "results")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint64]string{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), network+"-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var c struct {
			ContainerID string `json:"containerId"`
			NetworkName string `json:"networkName"`
			NetNS       string `json:"netns"`
		}
		if json.Unmarshal(b, &c) != nil || c.NetworkName != network || c.NetNS == "" {
			continue
		}
		if ino, err := inode(c.NetNS); err == nil {
			out[ino] = c.ContainerID
		}
	}
	return out
}

// killNamespace SIGKILLs every process in the network namespace ino and
// the containerd shims that are their parents, waits for them to exit
// (ten seconds at most), then unmounts the root filesystems of the shims'
// containers (ROOTFS in the bundle, the shim's working directory) and
// removes the cgroups the namespace's processes were in once empty (a
// container's, which runc removes only when its shim asks). It returns
// the processes it signalled and the filesystems it unmounted.
func killNamespace(ctx context.Context, ino uint64) (_ []int, unmounted []string, _ error) {
	me := os.Getpid()
	var victims, cgroupOwners []int
	var bundles []string
	for _, pid := range pids() {
		if pid == me || pid == 1 {
			continue
		}
		if i, err := inode("/proc/" + strconv.Itoa(pid) + "/ns/net"); err != nil || i != ino {
			continue
		}
		victims = append(victims, pid)
		cgroupOwners = append(cgroupOwners, pid)
		if pp := parentPID(pid); pp > 1 && pp != me && isShim(pp) && !slices.Contains(victims, pp) {
			victims = append(victims, pp)
			if b, err := os.Readlink("/proc/" + strconv.Itoa(pp) + "/cwd"); err == nil && filepath.IsAbs(b) {
				bundles = append(bundles, b)
			}
		}
	}
	var cgroups []string
	for _, pid := range cgroupOwners {
		cgroups = append(cgroups, cgroupDirs(pid)...)
	}
	var (
		fds  []unix.PollFd
		errs []error
	)
	for _, pid := range victims {
		// A pidfd names this process, not whatever reuses its PID.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	defer func() {
		for _, f := range fds {
			unix.Close(int(f.Fd))
		}
	}()
	// I/O deadline: real time, whatever the clock.
	deadline := time.Now().Add(10 * time.Second)
	for pending := slices.Clone(fds); len(pending) > 0; {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%d killed processes of netns %d still running", len(pending), ino))
			break
		}
		if _, err := unix.Poll(pending, int(min(left, 100*time.Millisecond).Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			errs = append(errs, fmt.Errorf("wait for killed processes: %w", err))
			break
		}
		pending = slices.DeleteFunc(pending, func(f unix.PollFd) bool { return f.Revents != 0 })
	}
	mounted := mountPoints()
	for _, b := range bundles {
		root := filepath.Join(b, "rootfs")
		if !mounted[root] {
			continue
		}
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", root, err))
			continue
		}
		unmounted = append(unmounted, root)
	}
	// Deepest first: a container's cgroup before any parent it made.
	slices.SortFunc(cgroups, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range slices.Compact(cgroups) {
		err := unix.Rmdir(d)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return victims, unmounted, errors.Join(errs...)
}

// parentPID is pid's parent, 0 when unknown.
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// isShim reports whether pid is a containerd shim.
func isShim(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.HasPrefix(string(b), "containerd-shim")
}

// cgroupDirs lists the cgroup directories pid is in, one per hierarchy,
// but the hierarchies' roots.
func cgroupDirs(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil
	}
	mounts := cgroupMounts()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// HIERARCHY-ID:CONTROLLERS:PATH
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" || !strings.HasPrefix(parts[2], "/") {
			continue
		}
		if m, ok := mounts[parts[1]]; ok {
			out = append(out, filepath.Join(m, parts[2]))
		}
	}
	return out
}

// cgroupMounts maps each cgroup hierarchy, by its controllers as
// /proc/PID/cgroup names them ("" for cgroup v2, "cpu,cpuacct",
// "name=systemd"), to where it is mounted with its root.
func cgroupMounts() map[string]string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		switch g[0] {
		case "cgroup2":
			if _, ok := out[""]; !ok {
				out[""] = unescapeMount(f[4])
			}
		case "cgroup":
			var ctrl []string
			for _, o := range strings.Split(g[2], ",") {
				if o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent=") && o != "clone_children" &&
					o != "noprefix" && o != "xattr" && o != "cpuset_v2_mode" && o != "nsdelegate" {
					ctrl = append(ctrl, o)
				}
			}
			key := strings.Join(ctrl, ",")
			if _, ok := out[key]; !ok {
				out[key] = unescapeMount(f[4])
			}
		}
	}
	return out
}
