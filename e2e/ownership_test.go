//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/surgeplatform/surge/api"
)

// These tests are the attacks of "Security I", finding 1, through the
// surge binary: each surge up on a bridge and pod CIDR of its own, so
// that they run beside the other tests and a `make run`.

// TestOrphanedReplica is the finding as a user met
// it: surge up on data dir A runs hello and dies without stopping it;
// surge up on data dir B, on the same bridge, deploys probe. B's agent
// finds hello's container on its bridge with no record of its own, and
// removes it (process, shim, namespace, veth, cgroup, root filesystem):
// probe answers every request itself, never hello from A.
func TestOrphanedReplica(t *testing.T) {
	requireRuntime(t)
	const bridge = "surge-sec0"
	var orphanVeths []string
	a := newClusterOn(t, "up", bridge, "10.250.0.0/16")
	// Registered after a's: runs before a's own cleanup, once b has
	// stopped (b's is registered later still, so runs first).
	t.Cleanup(func() { removeUnder(t, a.dataDir, orphanVeths) })
	a.start()
	deployFunction(t, a, "hello", "../examples/hello")
	if body := get(t, a, "hello"); !strings.Contains(body, "hello from surge") {
		t.Fatalf("hello on A answered %q", body)
	}
	orphans := shimIDsUnder(a.dataDir)
	shims := shimsUnder(a.dataDir)
	procs := functionPIDs(t, replicasNamed(orphans))
	pins := nsfsMountsUnder(a.dataDir)
	orphanVeths = vethsOn(t, bridge)
	if len(orphans) != 1 || len(procs) != 1 || len(pins) == 0 || len(orphanVeths) == 0 {
		t.Fatalf("A runs replicas %v (shims %v, processes %v), namespaces %v, veths %v; want hello's one",
			orphans, shims, procs, pins, orphanVeths)
	}
	// A dies as a crash would: no chance to stop its replica.
	a.stop(syscall.SIGKILL)

	b := newClusterOn(t, "up", bridge, "10.250.0.0/16")
	b.start()
	deployFunction(t, b, "probe", writeProbe(t))
	for i := range 20 {
		if body := get(t, b, "probe"); body != "probe answers\n" {
			t.Fatalf("request %d for probe answered %q, want probe's own reply; surge output:\n%s", i, body, b.out)
		}
	}

	// Everything of the orphan is gone, not only out of the way.
	for _, pid := range append(shims, procs...) {
		waitUntil(t, fmt.Sprintf("the orphan's process %d to be gone", pid), 30*time.Second, func() bool { return !alive(pid) })
	}
	if left := nsfsMountsUnder(a.dataDir); len(left) > 0 {
		t.Errorf("the orphan's namespaces still pinned: %v", left)
	}
	if left := mountsUnder(a.dataDir); len(left) > 0 {
		t.Errorf("mounts of the orphan left: %v", left)
	}
	now := vethsOn(t, bridge)
	for _, v := range orphanVeths {
		if slices.Contains(now, v) {
			t.Errorf("the orphan's veth %s is still on %s", v, bridge)
		}
	}
	for _, id := range orphans {
		if left := cgroupsOf(id); len(left) > 0 {
			t.Errorf("the orphan's cgroups left: %v", left)
		}
	}
	if out := b.out.String(); !strings.Contains(out, "removed a replica another agent left on the bridge") {
		t.Errorf("B's agent did not say what it removed; its output:\n%s", out)
	}
}

// TestSecondAgentRefused: a second surge up on a bridge whose
// agent runs refuses to start, naming the agent that owns it, and the
// first goes on.
func TestSecondAgentRefused(t *testing.T) {
	requireRuntime(t)
	const bridge = "surge-sec1"
	// b first: its cleanup, which deletes the bridge, runs after a's.
	b := newClusterOn(t, "up", bridge, "10.253.0.0/16")
	a := newClusterOn(t, "up", bridge, "10.253.0.0/16")
	a.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, surgeBin, append([]string{"up"}, b.flags...)...)
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+b.config)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second surge up on %s: %v, want exit 1; output:\n%s", bridge, err, out)
	}
	want := fmt.Sprintf("surge: bridge %s belongs to the agent of node %q (state dir %s, pid %d): stop it, or pass another --bridge and --pod-cidr\n",
		bridge, hostNode(t), filepath.Join(a.dataDir, "agent", "network"), a.cmd.Process.Pid)
	if string(out) != want {
		t.Errorf("second surge up said:\n%s\nwant one line:\n%s", out, want)
	}
	if _, err := os.Stat(b.dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused surge up made its data dir (%v): it should stop before starting anything", err)
	}
	if _, _, code := a.surge("ls"); code != 0 {
		t.Errorf("the first surge up stopped serving")
	}
}

// TestUpStopsReplicas: surge up stopped with SIGTERM leaves
// no replica running (no shim, no namespace, no veth); with
// --keep-replicas it leaves them, and the next surge up on the data dir
// adopts them: same processes.
func TestUpStopsReplicas(t *testing.T) {
	requireRuntime(t)
	const bridge = "surge-sec2"
	c := newClusterOn(t, "up", bridge, "10.252.0.0/16")
	c.start()
	deployFunction(t, c, "hello", "../examples/hello")
	if body := get(t, c, "hello"); !strings.Contains(body, "hello from surge") {
		t.Fatalf("hello answered %q", body)
	}
	shims := shimsUnder(c.dataDir)
	if len(shims) != 1 || len(nsfsMountsUnder(c.dataDir)) == 0 {
		t.Fatalf("hello runs in shims %v, namespaces %v; want one", shims, nsfsMountsUnder(c.dataDir))
	}
	c.stop(syscall.SIGTERM)
	for _, pid := range shims {
		if alive(pid) {
			t.Errorf("shim %d still runs after surge up stopped", pid)
		}
	}
	if left := nsfsMountsUnder(c.dataDir); len(left) > 0 {
		t.Errorf("namespaces still pinned after surge up stopped: %v", left)
	}
	if left := vethsOn(t, bridge); len(left) > 0 {
		t.Errorf("veths still on %s after surge up stopped: %v", bridge, left)
	}

	// The replica comes back with the next start, and this time stays.
	c.flags = append(c.flags, "--keep-replicas")
	c.start()
	kept := get(t, c, "hello")
	if !strings.Contains(kept, "hello from surge") {
		t.Fatalf("hello after a restart answered %q", kept)
	}
	if got := shimsUnder(c.dataDir); len(got) == 1 && got[0] == shims[0] {
		t.Fatalf("hello's shim %d of before the stop runs again", got[0])
	}
	shims = shimsUnder(c.dataDir)
	procs := functionPIDs(t, replicasNamed(shimIDsUnder(c.dataDir)))
	if len(shims) != 1 || len(procs) != 1 {
		t.Fatalf("hello runs in shims %v, processes %v; want one", shims, procs)
	}
	c.stop(syscall.SIGTERM)
	if !alive(shims[0]) || !alive(procs[0]) {
		t.Fatalf("with --keep-replicas, hello's shim %d or process %d stopped with surge up", shims[0], procs[0])
	}

	c.flags = slices.DeleteFunc(c.flags, func(f string) bool { return f == "--keep-replicas" })
	c.start()
	if got := get(t, c, "hello"); got != kept {
		t.Errorf("after a restart hello answered %q, want the kept replica's %q", got, kept)
	}
	if got := shimsUnder(c.dataDir); !slices.Equal(got, shims) {
		t.Errorf("shims after a restart %v, want the kept %v", got, shims)
	}
	if got := functionPIDs(t, replicasNamed(shimIDsUnder(c.dataDir))); !slices.Equal(got, procs) {
		t.Errorf("hello's processes after a restart %v, want the kept %v (adopted)", got, procs)
	}
}

// TestHostNetworkFlag: where the CNI plugins are
// missing (hidden here by a mount namespace of the test's own), surge up
// fails at once with one line saying what to install or which flag to
// pass; with --host-network it runs, and its replicas answer.
func TestHostNetworkFlag(t *testing.T) {
	requireRuntime(t)
	c := newClusterOn(t, "up", "surge-sec3", "10.254.0.0/16")
	// unshare(1) execs sh, which execs surge: one process.
	hide := []string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`for d in /usr/lib/cni /opt/cni/bin; do if [ -d $d ]; then mount -t tmpfs tmpfs $d || exit 3; fi; done; exec "$0" "$@"`,
		surgeBin, "up"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hide[0], append(hide[1:], c.flags...)...)
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	want := "surge: the CNI plugins that give each replica its own network (bridge, host-local, loopback) are not in /usr/lib/cni or /opt/cni/bin: " +
		"install them (apt-get install containernetworking-plugins), or pass --host-network to run replicas in the host's network, without isolation\n"
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("surge up without the plugins: %v, stdout %q, stderr:\n%s\nwant exit 1 and one line:\n%s", err, stdout.String(), stderr.String(), want)
	}

	c.flags = append(c.flags, "--host-network")
	startWrapped(c, hide)
	deployFunction(t, c, "hello", "../examples/hello")
	if body := get(t, c, "hello"); !strings.Contains(body, "hello from surge") {
		t.Errorf("hello in the host's network answered %q", body)
	}
	if out := c.out.String(); !strings.Contains(out, "replica networking: host network, as configured") {
		t.Errorf("surge up --host-network does not say it runs replicas in the host's network; output:\n%s", out)
	}
}

// startWrapped is c.start with c's command run by wrap (its last element
// followed by c's flags): the readiness wait is c.start's.
func startWrapped(c *cluster, wrap []string) {
	c.t.Helper()
	c.cmd = exec.Command(wrap[0], append(wrap[1:], c.flags...)...)
	c.cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	c.out = &syncBuffer{}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, _, code := c.surge("version"); code == 0 && !strings.Contains(out, "server: unknown") {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("surge %s not serving after 60s; its output:\n%s", c.verb, c.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deployFunction builds the Go function in dir and deploys it as name,
// one replica kept, and waits for it to take the traffic.
func deployFunction(t *testing.T, c *cluster, name, dir string) {
	t.Helper()
	ref := strings.TrimSpace(c.mustSurge("build", dir, "-t", name+":v1"))
	if _, errOut, code := c.surge("deploy", name, "--image", ref, "--min-scale", "1"); code != 0 {
		t.Fatalf("surge deploy %s: exit %d: %s\nsurge output:\n%s", name, code, errOut, c.out)
	}
}

// writeProbe writes the source of a function that answers "probe
// answers", and returns its directory.
func writeProbe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/probe\n\ngo 1.22\n",
		"main.go": `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "probe answers") })
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// get requests /fn/NAME/ through c's gateway and returns the body.
func get(t *testing.T, c *cluster, name string) string {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get("http://" + c.gateway + "/fn/" + name + "/")
	if err != nil {
		t.Fatalf("GET /fn/%s/: %v", name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /fn/%s/: %s %q", name, resp.Status, body)
	}
	return string(body)
}

// replicasNamed are replicas with these names, for functionPIDs.
func replicasNamed(names []string) []api.Replica {
	out := make([]api.Replica, len(names))
	for i, n := range names {
		out[i].Metadata.Name = n
	}
	return out
}

// hostNode is the node name surge up gives this machine.
func hostNode(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(h)
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// vethsOn lists the veths enslaved to bridge.
func vethsOn(t *testing.T, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// mountsUnder lists the mount points under dir, with their types.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fs, typ := strings.Fields(pre), strings.Fields(post)
		if len(fs) > 4 && len(typ) > 0 && strings.HasPrefix(fs[4], dir+"/") {
			out = append(out, fs[4]+" ("+typ[0]+")")
		}
	}
	return out
}

// nsfsMountsUnder lists the network namespaces pinned under dir.
func nsfsMountsUnder(dir string) []string {
	var out []string
	for _, m := range mountsUnder(dir) {
		if p, ok := strings.CutSuffix(m, " (nsfs)"); ok {
			out = append(out, p)
		}
	}
	return out
}

// cgroupsOf lists the cgroups containerd made for container id in the
// surge namespace, in every hierarchy.
func cgroupsOf(id string) []string {
	found, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "surge", id))
	if d := filepath.Join("/sys/fs/cgroup", "surge", id); exists(d) {
		found = append(found, d)
	}
	return found
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// removeUnder removes what a surge process under dir left that its own
// stop cannot: a SIGKILLed surge's private containerd, and, should the
// test fail, its replicas (processes, mounts, veths).
func removeUnder(t *testing.T, dir string, veths []string) {
	t.Helper()
	killUnder(t, dir)
	for _, m := range mountsUnder(dir) {
		p, _, _ := strings.Cut(m, " (")
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
	for _, v := range veths {
		if l, err := netlink.LinkByName(v); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
}
