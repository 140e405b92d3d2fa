package network

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
)

func TestFindStrays(t *testing.T) {
	const self = 4026531840
	mine := nsRef{Ino: 101, NsID: 1, Pins: []string{"/s/netns/cni-1"}}
	theirs := nsRef{Ino: 202, NsID: 2, Pins: []string{"/old/netns/cni-2"}, PIDs: []int{300, 301}}
	unpinned := nsRef{Ino: 303, NsID: 3, PIDs: []int{400}}
	here := nsRef{Ino: self, NsID: 4, PIDs: []int{1}}
	found := []nsRef{mine, theirs, unpinned, here}
	explained := map[int]bool{1: true}

	tests := []struct {
		name  string
		ports []bridgePort
		want  []stray
	}{
		{"nothing on the bridge", nil, nil},
		{"only what the records explain", []bridgePort{{Name: "veth1", Veth: true, PeerNsID: 1}}, nil},
		{"another agent's replica, pinned and running", []bridgePort{
			{Name: "veth1", Veth: true, PeerNsID: 1},
			{Name: "veth2", Veth: true, PeerNsID: 2},
		}, []stray{{Port: bridgePort{Name: "veth2", Veth: true, PeerNsID: 2}, NS: theirs}}},
		{"a namespace kept only by its processes", []bridgePort{{Name: "veth3", Veth: true, PeerNsID: 3}},
			[]stray{{Port: bridgePort{Name: "veth3", Veth: true, PeerNsID: 3}, NS: unpinned}}},
		{"a namespace not found: the veth still goes", []bridgePort{{Name: "veth9", Veth: true, PeerNsID: 9}},
			[]stray{{Port: bridgePort{Name: "veth9", Veth: true, PeerNsID: 9}}}},
		{"links that are no replica's stay", []bridgePort{
			{Name: "tap0", PeerNsID: -1},                 // not a veth
			{Name: "vethhost", Veth: true, PeerNsID: -1}, // both ends here
			{Name: "veth4", Veth: true, PeerNsID: 4},     // other end in this namespace
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := findStrays(tt.ports, explained, found, self)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findStrays (-want +got):\n%s", diff)
			}
		})
	}
}

func TestARPProbeAndReply(t *testing.T) {
	from := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	ip := netip.MustParseAddr("10.244.1.7")
	req := arpProbe(from, ip)
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 244, 1, 7}
	if diff := cmp.Diff(want, req); diff != "" {
		t.Errorf("probe (-want +got):\n%s", diff)
	}
	if _, ok := arpReply(req, ip); ok {
		t.Errorf("a request read as a reply")
	}
	// The answer of the holder of ip: sender = its hardware address and ip.
	reply := []byte{0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 9, 10, 244, 1, 7, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	mac, ok := arpReply(reply, ip)
	if !ok || mac.String() != "02:00:00:00:00:09" {
		t.Errorf("arpReply = %v, %v; want 02:00:00:00:00:09", mac, ok)
	}
	if _, ok := arpReply(reply, netip.MustParseAddr("10.244.1.8")); ok {
		t.Errorf("a reply for another address accepted")
	}
	if _, ok := arpReply(reply[:20], ip); ok {
		t.Errorf("a short packet accepted")
	}
}

// TestClaimBridge: one claim per bridge; the refusal names the holder;
// the kernel ends a claim with its holder, however it dies.
func TestClaimBridge(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = "/var/lib/a/network"
	cfg.LockDir = t.TempDir()
	cfg.BridgeName = "surgetk0"
	first, err := ClaimBridge(cfg, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.StateDir = "/var/lib/b/network"
	_, err = ClaimBridge(other, "node-b")
	var owned *OwnedError
	if !errors.As(err, &owned) || !errors.Is(err, ErrBridgeOwned) {
		t.Fatalf("second claim = %v, want an *OwnedError", err)
	}
	want := &OwnedError{Bridge: "surgetk0", Owner: Owner{StateDir: "/var/lib/a/network", Node: "node-a", PID: os.Getpid()}}
	if diff := cmp.Diff(want, owned); diff != "" {
		t.Errorf("refusal (-want +got):\n%s", diff)
	}
	for _, w := range []string{"surgetk0", "/var/lib/a/network", "node-a"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not name %s", err, w)
		}
	}
	// Another bridge is another claim.
	third := other
	third.BridgeName = "surgetk1"
	c, err := ClaimBridge(third, "node-b")
	if err != nil {
		t.Fatalf("claim of another bridge: %v", err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}

	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if err := first.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	second, err := ClaimBridge(other, "node-b")
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	if err := second.Release(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(cfg.LockDir); len(ents) != 0 {
		t.Errorf("lock dir after every release: %v", ents)
	}

	// A holder killed without releasing: its lock goes with it. flock(1)
	// holds it here (closing it in the command it runs, so that it alone
	// holds it), and says so through the command.
	held, err := ClaimBridge(cfg, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	path := held.path
	held.Release()
	holder := exec.Command("flock", "--nonblock", "--close", path, "sh", "-c", "echo held; exec sleep 600")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
			holder.Wait()
		}
	}
	t.Cleanup(kill)
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("flock(1) did not take the lock: %q, %v", line, err)
	}
	if _, err := ClaimBridge(cfg, "node-a"); !errors.As(err, &owned) || owned.Owner != (Owner{}) {
		t.Fatalf("claim while flock(1) holds the lock = %v, want an *OwnedError naming no one", err)
	}
	kill()
	c, err = ClaimBridge(cfg, "node-a")
	if err != nil {
		t.Fatalf("claim after the holder was killed: %v", err)
	}
	c.Release()
}

// TestRemoveStraysAndProbe plays a second agent on the bridge: a Network
// on another state dir, without the claim, sets up a replica while the
// owner's runs. Its address is probed, and the owner's answer makes it
// take another. Then its process is left running, as by an agent that
// died; the owner's RemoveStrays kills it and removes its veth, its
// namespace and its masquerade rules, and leaves its own replica alone.
func TestRemoveStraysAndProbe(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 240)
	cfg.LockDir = t.TempDir()
	claim, err := ClaimBridge(cfg, "owner")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { claim.Release() })
	cfg.Claim = claim
	owner, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mine, err := owner.Setup(ctx, "mine")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Teardown(context.Background(), "mine") })

	other := cfg
	other.StateDir, other.Claim = t.TempDir(), nil
	intruder, err := New(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := intruder.RemoveStrays(ctx); err == nil {
		t.Errorf("RemoveStrays without the bridge's claim: want an error")
	}
	theirs, err := intruder.Setup(ctx, "theirs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { intruder.Teardown(context.Background(), "theirs") })
	// Its host-local store knows nothing of the owner's replica and hands
	// out the same first address; the probe finds the owner's answer.
	if theirs.IP == mine.IP {
		t.Fatalf("the second Network handed out %s, which the owner's replica answers at", mine.IP)
	}
	held, err := os.ReadFile(filepath.Join(other.StateDir, "ipam", other.NetworkName, mine.IP))
	if err != nil || !strings.HasPrefix(string(held), holdMarker) {
		t.Errorf("%s not held in the second store: %q, %v", mine.IP, held, err)
	}

	proc := exec.Command("nsenter", "--net="+theirs.NetNS, "--", "sleep", "600")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	t.Cleanup(func() {
		proc.Process.Kill()
		<-exited
	})
	theirsIno, err := inode(theirs.NetNS)
	if err != nil {
		t.Fatal(err)
	}

	removed, err := owner.RemoveStrays(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 {
		t.Fatalf("removed %+v, want the second Network's replica", removed)
	}
	r := removed[0]
	if r.NetNS != theirsIno || !slices.Equal(r.Pins, []string{theirs.NetNS}) || r.ContainerID != "theirs" || !slices.Contains(r.Killed, proc.Process.Pid) {
		t.Errorf("removed %+v, want netns %d pinned at %s, container id theirs, pid %d killed", r, theirsIno, theirs.NetNS, proc.Process.Pid)
	}
	if err := <-exited; err == nil {
		t.Errorf("the stray's process exited cleanly, want killed")
	}
	exited <- nil // for the cleanup
	if netnsAlive(theirs.NetNS) {
		t.Errorf("the stray's namespace is still pinned at %s", theirs.NetNS)
	}
	ports, err := listPorts(cfg.BridgeName)
	if err != nil || len(ports) != 1 {
		t.Errorf("bridge ports after RemoveStrays: %+v, %v; want the owner's veth only", ports, err)
	}
	if _, err := os.Stat(filepath.Join(libcni.CacheDir, "results", cfg.NetworkName+"-theirs-eth0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CNI cache of the stray: %v, want it gone with its DEL", err)
	}
	if out, err := exec.Command("iptables-save", "-t", "nat").Output(); err != nil || strings.Contains(string(out), `id: \"theirs\"`) {
		t.Errorf("masquerade rules of the stray left (%v):\n%s", err, out)
	}
	if err := owner.Check(ctx, "mine"); err != nil {
		t.Errorf("the owner's replica after RemoveStrays: %v", err)
	}
	if again, err := owner.RemoveStrays(ctx); err != nil || len(again) != 0 {
		t.Errorf("second RemoveStrays = %+v, %v; want nothing", again, err)
	}

	// The next Network on the second state dir gives the held address back.
	if err := intruder.Teardown(ctx, "theirs"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other.StateDir, "ipam", other.NetworkName, mine.IP)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("held address after a restart: %v, want released", err)
	}
}
