package containers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

	"github.com/surgeplatform/surge/nodeagent/network"
)

// startReplica starts spec on r and stops it when the test ends.
func startReplica(t *testing.T, ctx context.Context, r *Runtime, spec Spec) Container {
	t.Helper()
	c, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start %s: %v", spec.ID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Stop(ctx, spec.ID, 0); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c
}

var httpClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitHTTP polls url every few milliseconds until it answers 200, and
// returns the body. The poll is what the cold start latency is measured
// by, so it is tight.
func waitHTTP(ctx context.Context, url string) (string, error) {
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := httpClient.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && rerr == nil {
				return string(b), nil
			}
			err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: %w (last: %v)", url, ctx.Err(), last)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func replicaURL(c Container, path string) string {
	return "http://" + net.JoinHostPort(c.IP, strconv.Itoa(int(c.Port))) + path
}

// cgroupValue reads a cgroup file of pid's cgroup for a v1 controller, or
// the v2 file when the controller is not mounted as v1.
func cgroupValue(t *testing.T, pid uint32, controller, v1file, v2file string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var v2path string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			v2path = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[1], parts[2], v1file))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(v))
			}
		}
	}
	v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", v2path, v2file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

func TestStartServeLimitsStop(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.base
	spec := Spec{
		ID: "serve-1", Namespace: "default", Function: "hello", Revision: "hello-00001",
		Image: e.imageRef, Port: 9090, Env: []string{"GREETING=hi", "PORT=1"},
		MilliCPU: 500, MemoryBytes: 64 << 20, PidsLimit: 64,
	}
	c, err := r.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			r.Stop(context.Background(), spec.ID, 0)
		}
	})
	if ip, err := netip.ParseAddr(c.IP); err != nil || !netip.MustParsePrefix(testSubnet).Contains(ip) {
		t.Fatalf("IP %q not in %s", c.IP, testSubnet)
	}
	if c.Port != 9090 || c.PID == 0 || !c.Running || c.Labels[LabelRevision] != "hello-00001" {
		t.Fatalf("Start returned %+v", c)
	}
	body, err := waitHTTP(ctx, replicaURL(c, "/"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("hello from serve-1 pid 1\n"); body != want {
		t.Errorf("body %q, want %q", body, want)
	}

	if got := cgroupValue(t, c.PID, "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(64<<20) {
		t.Errorf("memory limit %s, want %d", got, 64<<20)
	}
	if got := cgroupValue(t, c.PID, "pids", "pids.max", "pids.max"); got != "64" {
		t.Errorf("pids limit %s, want 64", got)
	}
	// Started with the boost on, the quota is off and the weight is a
	// whole core's until ApplyCPULimit.
	if got := cgroupValue(t, c.PID, "cpu", "cpu.cfs_quota_us", "cpu.max"); got != "-1" && !strings.HasPrefix(got, "max") {
		t.Errorf("cpu quota %s during start-up, want none (the start-up boost)", got)
	}
	if got := cgroupValue(t, c.PID, "cpu", "cpu.shares", "cpu.weight"); got != "1024" && got != "100" {
		t.Errorf("cpu weight %s during start-up, want the default, 1024 shares (weight 100)", got)
	}
	if err := r.ApplyCPULimit(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := cgroupValue(t, c.PID, "cpu", "cpu.cfs_quota_us", "cpu.max"); got != "50000" && got != "50000 100000" {
		t.Errorf("cpu quota %s after ApplyCPULimit, want 50000 of 100000", got)
	}
	// 500m weighs 512 shares (cgroup v2: weight 1+(512-2)*9999/262142).
	if got := cgroupValue(t, c.PID, "cpu", "cpu.shares", "cpu.weight"); got != "512" && got != "20" {
		t.Errorf("cpu weight %s after ApplyCPULimit, want 512 shares (weight 20)", got)
	}

	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(x Container) bool { return x.ID == spec.ID })
	if i < 0 {
		t.Fatalf("List has no %s: %+v", spec.ID, list)
	}
	if got := list[i]; got.PID != c.PID || got.IP != c.IP || got.Port != c.Port || !got.Running || got.Created.IsZero() || got.Labels[LabelFunction] != "hello" {
		t.Errorf("List entry %+v, want %+v", got, c)
	}

	exits, err := r.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	att, _ := r.Network().Get(spec.ID)
	if err := r.Stop(ctx, spec.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case ex := <-exits:
		// The replica exits 0 on SIGTERM: the grace was used, not SIGKILL.
		if ex.Err != nil || ex.Code != 0 {
			t.Errorf("exit after Stop: %+v, want code 0", ex)
		}
	case <-ctx.Done():
		t.Fatal("no exit after Stop")
	}
	if _, err := os.Stat(att.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %q after Stop: %v", att.NetNS, err)
	}
	if _, err := os.Stat(r.LogPath(spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file after Stop: %v", err)
	}
	if list, _ := r.List(ctx); slices.ContainsFunc(list, func(x Container) bool { return x.ID == spec.ID }) {
		t.Errorf("List after Stop still has %s", spec.ID)
	}
	if err := r.Stop(ctx, spec.ID, 0); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// report is testdata/replica's /report.
type report struct {
	UID, GID   int
	Groups     []int
	Status     map[string]string
	Hostname   string
	Env        map[string]string
	WriteRoot  string
	WriteData  string
	WriteTmp   string
	TmpSize    uint64
	RootMount  string
	Setuid     string
	Keyctl     string
	Mount      string
	Chown      string
	ResolvConf string
}

func getReport(t *testing.T, ctx context.Context, c Container) report {
	t.Helper()
	if _, err := waitHTTP(ctx, replicaURL(c, "/")); err != nil {
		t.Fatal(err)
	}
	body, err := waitHTTP(ctx, replicaURL(c, "/report"))
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("report %q: %v", body, err)
	}
	t.Logf("report from inside %s: %s", c.ID, body)
	return rep
}

func TestHardening(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.base

	t.Run("default user", func(t *testing.T) {
		c := startReplica(t, ctx, r, Spec{ID: "harden-1", Image: e.imageRef, Env: []string{"GREETING=hi"}, MemoryBytes: 128 << 20})
		rep := getReport(t, ctx, c)
		const zero = "0000000000000000"
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if rep.Status[k] != zero {
				t.Errorf("%s = %q, want no capabilities", k, rep.Status[k])
			}
		}
		if rep.Status["NoNewPrivs"] != "1" {
			t.Errorf("NoNewPrivs = %q, want 1", rep.Status["NoNewPrivs"])
		}
		if rep.Status["Seccomp"] != "2" {
			t.Errorf("Seccomp = %q, want 2 (filter)", rep.Status["Seccomp"])
		}
		if rep.UID != 65532 || rep.GID != 65532 {
			t.Errorf("uid/gid %d/%d, want 65532/65532", rep.UID, rep.GID)
		}
		if !strings.Contains(rep.WriteData, "read-only file system") {
			t.Errorf("write to a 0777 dir of the rootfs: %q, want read-only file system", rep.WriteData)
		}
		if rep.WriteRoot == "" {
			t.Errorf("write to / succeeded")
		}
		if !strings.HasPrefix(rep.RootMount, "ro") {
			t.Errorf("/ mounted %q, want ro", rep.RootMount)
		}
		if rep.WriteTmp != "" {
			t.Errorf("write to /tmp: %q, want success", rep.WriteTmp)
		}
		if rep.TmpSize != uint64(e.cfg.TmpSize) {
			t.Errorf("/tmp size %d, want %d", rep.TmpSize, e.cfg.TmpSize)
		}
		for what, got := range map[string]string{"setuid(0)": rep.Setuid, "keyctl (seccomp)": rep.Keyctl, "mount": rep.Mount, "chown to root": rep.Chown} {
			if !strings.HasSuffix(got, "operation not permitted") {
				t.Errorf("%s: %q, want operation not permitted", what, got)
			}
		}
		if rep.Env["PORT"] != "8080" || rep.Env["GREETING"] != "hi" || rep.Env["IMAGE_ENV"] != "from-image" || rep.Hostname != "harden-1" {
			t.Errorf("env %v hostname %q", rep.Env, rep.Hostname)
		}
		if !strings.Contains(rep.ResolvConf, "nameserver") || strings.Contains(rep.ResolvConf, "nameserver 127.") {
			t.Errorf("resolv.conf %q: want the host's non-loopback nameservers", rep.ResolvConf)
		}
	})

	t.Run("named image user", func(t *testing.T) {
		c := startReplica(t, ctx, r, Spec{ID: "harden-2", Image: e.namedRef})
		rep := getReport(t, ctx, c)
		if rep.UID != 1234 || rep.GID != 1234 {
			t.Errorf("uid/gid %d/%d, want 1234/1234 (user app of the image's /etc/passwd)", rep.UID, rep.GID)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		spec := Spec{ID: "harden-fork", Image: e.imageRef, Args: []string{"forktest"}, PidsLimit: 24}
		c := startReplica(t, ctx, r, spec)
		exits, err := r.Wait(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		ex := <-exits
		log, _ := os.ReadFile(r.LogPath(c.ID))
		t.Logf("forktest exit %+v, log:\n%s", ex, log)
		// Either fork fails (exit 0, FORK_LIMITED) or the Go runtime of the
		// forker dies unable to make a thread: both are the limit at work.
		if !strings.Contains(string(log), "FORK_LIMITED") && !strings.Contains(string(log), "failed to create new OS thread") {
			t.Errorf("forktest was not limited")
		}
	})
}

func TestKillWaitRestart(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.base
	c := startReplica(t, ctx, r, Spec{ID: "restart-1", Image: e.imageRef})
	if _, err := waitHTTP(ctx, replicaURL(c, "/")); err != nil {
		t.Fatal(err)
	}
	exits, err := r.Wait(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Kill the task behind the runtime's back, as the OOM killer would.
	task, err := mustContainer(t, ctx, r, c.ID).Task(r.nsctx(ctx), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(r.nsctx(ctx), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-exits:
		if ex.Code != 137 || ex.Err != nil || ex.At.IsZero() {
			t.Errorf("exit %+v, want code 137 (SIGKILL)", ex)
		}
	case <-ctx.Done():
		t.Fatal("no exit")
	}
	// A Wait after the exit reports it at once.
	again, err := r.Wait(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ex := <-again; ex.Code != 137 {
		t.Errorf("late Wait: %+v", ex)
	}
	list, _ := r.List(ctx)
	if i := slices.IndexFunc(list, func(x Container) bool { return x.ID == c.ID }); i < 0 || list[i].Running || list[i].PID != 0 {
		t.Errorf("List after kill: %+v", list)
	}

	c2, err := r.Restart(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c2.PID == 0 || c2.PID == c.PID || c2.IP != c.IP || c2.Port != c.Port || !c2.Running {
		t.Errorf("after Restart %+v, before %+v: want a new PID, same IP and port", c2, c)
	}
	if _, err := waitHTTP(ctx, replicaURL(c2, "/")); err != nil {
		t.Fatal(err)
	}
	// Restart of a running task replaces it.
	c3, err := r.Restart(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c3.PID == c2.PID || c3.IP != c.IP {
		t.Errorf("second Restart %+v", c3)
	}
	if _, err := waitHTTP(ctx, replicaURL(c3, "/")); err != nil {
		t.Fatal(err)
	}
}

func mustContainer(t *testing.T, ctx context.Context, r *Runtime, id string) client.Container {
	t.Helper()
	ctr, err := r.client.LoadContainer(r.nsctx(ctx), id)
	if err != nil {
		t.Fatal(err)
	}
	return ctr
}

func TestAdoption(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)

	// The first agent starts a replica, then goes away.
	first, err := New(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := first.Start(ctx, Spec{ID: "adopt-1", Image: e.imageRef, Function: "adopt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := waitHTTP(ctx, replicaURL(c, "/")); err != nil {
		t.Fatalf("replica after its agent closed: %v", err)
	}
	// It keeps logging: the shim writes the file, not the agent.
	if _, err := waitHTTP(ctx, replicaURL(c, "/log?n=1&size=20&tag=orphaned")); err != nil {
		t.Fatal(err)
	}
	for {
		b, _ := os.ReadFile(first.LogPath(c.ID))
		if strings.Contains(string(b), "orphaned line 000000") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line written without an agent; log:\n%s", b)
		case <-time.After(5 * time.Millisecond):
		}
	}

	// The next agent finds it as it was.
	second := e.newRuntime(t, nil)
	t.Cleanup(func() { second.Stop(context.Background(), "adopt-1", 0) })
	list, err := second.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(x Container) bool { return x.ID == "adopt-1" })
	if i < 0 {
		t.Fatalf("List has no adopt-1: %+v", list)
	}
	if got := list[i]; got.PID != c.PID || got.IP != c.IP || got.Port != c.Port || !got.Running || got.Labels[LabelFunction] != "adopt" {
		t.Errorf("adopted %+v, want %+v", got, c)
	}
	// It can wait on it and stop it.
	exits, err := second.Wait(ctx, "adopt-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Stop(ctx, "adopt-1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if ex := <-exits; ex.Err != nil || ex.Code != 0 {
		t.Errorf("adopted exit %+v", ex)
	}
	if _, err := second.Network().Get("adopt-1"); !errors.Is(err, network.ErrNotFound) {
		t.Errorf("network attachment after Stop: %v", err)
	}
}

func TestRemoveOrphans(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.base
	keep := startReplica(t, ctx, r, Spec{ID: "orph-keep", Image: e.imageRef})
	orphan := startReplica(t, ctx, r, Spec{ID: "orph-gone", Image: e.imageRef})
	orphanAtt, err := r.Network().Get(orphan.ID)
	if err != nil {
		t.Fatal(err)
	}
	// What an agent killed inside Start leaves: a network attachment, and
	// a log file, with no container.
	ghost, err := r.Network().Setup(ctx, "orph-ghost")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.LogPath("orph-ghost2"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	removed, err := r.RemoveOrphans(ctx, func(id string) bool { return !strings.HasPrefix(id, "orph-") || id == "orph-keep" })
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(removed)
	if want := []string{"orph-ghost", "orph-ghost2", "orph-gone"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	list, _ := r.List(ctx)
	if slices.ContainsFunc(list, func(x Container) bool { return x.ID == orphan.ID }) {
		t.Errorf("orphan container still listed")
	}
	if !slices.ContainsFunc(list, func(x Container) bool { return x.ID == keep.ID && x.Running }) {
		t.Errorf("kept replica gone: %+v", list)
	}
	for _, p := range []string{orphanAtt.NetNS, ghost.NetNS, r.LogPath("orph-ghost2"), r.LogPath(orphan.ID)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if _, err := waitHTTP(ctx, replicaURL(keep, "/")); err != nil {
		t.Errorf("kept replica: %v", err)
	}
}

func TestLogsWrittenRotatedFollowed(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.newRuntime(t, func(c *Config) {
		c.LogMaxSize = 8 << 10
		c.LogMaxFiles = 2
		c.LogPollInterval = 5 * time.Millisecond
	})
	c := startReplica(t, ctx, r, Spec{ID: "logs-1", Image: e.imageRef})
	if _, err := waitHTTP(ctx, replicaURL(c, "/")); err != nil {
		t.Fatal(err)
	}

	follow, err := r.OpenLogs(ctx, c.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(follow)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// waitLine reads followed lines until one has prefix.
	waitLine := func(prefix string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("follower ended before %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no line %q", prefix)
			}
		}
	}
	waitLine("listening on :8080")

	// 100 lines of 100 bytes: past the 8 KiB limit.
	if _, err := waitHTTP(ctx, replicaURL(c, "/log?n=100&size=100&tag=A")); err != nil {
		t.Fatal(err)
	}
	waitLine("A line 000099")
	if err := r.enforceLogCaps(); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(r.LogPath(c.ID) + ".1")
	if err != nil || !strings.Contains(string(old), "A line 000099") {
		t.Fatalf("rotated file: %v, %d bytes", err, len(old))
	}
	if st, _ := os.Stat(r.LogPath(c.ID)); st.Size() != 0 {
		t.Errorf("live log %d bytes after rotation, want 0", st.Size())
	}

	// The shim keeps appending to the truncated file, and the follower
	// goes on from its start.
	if _, err := waitHTTP(ctx, replicaURL(c, "/log?n=3&size=50&tag=B")); err != nil {
		t.Fatal(err)
	}
	waitLine("B line 000002")
	live, _ := os.ReadFile(r.LogPath(c.ID))
	if !strings.HasPrefix(string(live), "B line 000000") {
		t.Errorf("live log after rotation starts %q", live[:min(len(live), 40)])
	}

	// Rotate twice more: only LogMaxFiles old files stay, and no more
	// than LogMaxSize in all.
	for _, tag := range []string{"C", "D"} {
		if _, err := waitHTTP(ctx, replicaURL(c, "/log?n=100&size=100&tag="+tag)); err != nil {
			t.Fatal(err)
		}
		waitLine(tag + " line 000099")
		if err := r.enforceLogCaps(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(r.LogPath(c.ID) + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a third rotated file exists: %v", err)
	}

	var onDisk int64
	for _, p := range append([]string{r.LogPath(c.ID)}, rotatedNames(r.LogPath(c.ID), 2)...) {
		if st, err := os.Stat(p); err == nil {
			onDisk += st.Size()
		}
	}
	if onDisk > r.cfg.LogMaxSize {
		t.Errorf("%d bytes of log on disk, past the replica's cap, %d", onDisk, r.cfg.LogMaxSize)
	}

	// A reader that does not follow (surge logs, the log server) gets the
	// old files, oldest first: D's 10 KB passed the cap, and its newest
	// lines are what is kept, whole and in order.
	all, err := r.OpenLogs(ctx, c.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(all)
	all.Close()
	if err != nil {
		t.Fatal(err)
	}
	kept := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(kept) < 20 || kept[len(kept)-1] == "" || !strings.HasPrefix(kept[len(kept)-1], "D line 000099") {
		t.Fatalf("non-follow read of %d lines ends %q, want D's newest", len(kept), kept[len(kept)-1])
	}
	first, _ := strconv.Atoi(strings.Fields(kept[0])[2])
	for i, l := range kept {
		if want := fmt.Sprintf("D line %06d ", first+i); !strings.HasPrefix(l, want) {
			t.Fatalf("non-follow read: line %d is %q, want %q…", i, l[:min(len(l), 20)], want)
		}
	}

	// Stop removes the log; the follower ends.
	if err := r.Stop(ctx, c.ID, 0); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
}

func TestEnsureImageAuthAndCache(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, time.Minute)

	// In a namespace of its own the image is not there yet, so containerd
	// must ask the registry, which refuses the token.
	badNS := e.cfg.Namespace + "-bad"
	bad := e.newRuntime(t, func(c *Config) { c.RegistryToken = "wrong"; c.Namespace = badNS })
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), badNS)
		if l, err := bad.client.LeasesService().Create(ctx, leases.WithRandomID()); err == nil {
			bad.client.LeasesService().Delete(ctx, l, leases.SynchronousDelete)
		}
		bad.client.NamespaceService().Delete(ctx, badNS)
	})
	err := bad.EnsureImage(ctx, e.imageRef)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("EnsureImage with a wrong token = %v, want a 401", err)
	}

	r := e.newRuntime(t, nil)
	if err := r.EnsureImage(ctx, e.imageRef); err != nil {
		t.Fatal(err)
	}
	hits := e.regHits.Load()
	for range 3 {
		if err := r.EnsureImage(ctx, e.imageRef); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.regHits.Load(); got != hits {
		t.Errorf("EnsureImage of a present image made %d registry requests", got-hits)
	}
	if e.badAuth.Load() == 0 {
		t.Errorf("the registry never saw the wrong token")
	}
}

func TestStartErrors(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, time.Minute)
	r := e.base
	startReplica(t, ctx, r, Spec{ID: "dup-1", Image: e.imageRef})
	if _, err := r.Start(ctx, Spec{ID: "dup-1", Image: e.imageRef}); !errors.Is(err, ErrExists) {
		t.Errorf("second Start = %v, want ErrExists", err)
	}
	// The first one was left alone.
	list, _ := r.List(ctx)
	if !slices.ContainsFunc(list, func(x Container) bool { return x.ID == "dup-1" && x.Running }) {
		t.Errorf("dup-1 not running after a failed second Start")
	}
	if _, err := r.Network().Get("dup-1"); err != nil {
		t.Errorf("dup-1's network after a failed second Start: %v", err)
	}

	if _, err := r.Start(ctx, Spec{ID: "noimage-1", Image: e.registryH + "/surge/nope:v1"}); err == nil {
		t.Errorf("Start of a missing image: want an error")
	}
	if _, err := r.Network().Get("noimage-1"); !errors.Is(err, network.ErrNotFound) {
		t.Errorf("failed Start left a network attachment: %v", err)
	}
	if _, err := r.Wait(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait(nobody) = %v, want ErrNotFound", err)
	}
	if _, err := r.Restart(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Restart(nobody) = %v, want ErrNotFound", err)
	}
	if err := r.Stop(ctx, "nobody", 0); err != nil {
		t.Errorf("Stop(nobody) = %v, want nil", err)
	}
	if _, err := r.OpenLogs(ctx, "nobody", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenLogs(nobody) = %v, want ErrNotFound", err)
	}
}

func TestPrivateContainerd(t *testing.T) {
	needEnv(t)
	if _, err := exec.LookPath("containerd"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and no containerd binary")
		}
		t.Skip("needs the containerd binary")
	}
	ctx := testContext(t, time.Minute)
	dir, err := os.MkdirTemp("", "surgepc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	cfg := DefaultConfig()
	cfg.ContainerdAddress = filepath.Join(dir, "nobody-here.sock")
	cfg.StateDir = filepath.Join(dir, "s")
	cfg.Network.Mode = network.ModeHost
	cfg.Log = testLogger()
	r, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if r.private == nil || r.ContainerdAddress() != filepath.Join(cfg.StateDir, "containerd", "containerd.sock") {
		t.Fatalf("private containerd not started: address %s", r.ContainerdAddress())
	}
	v, err := r.Client().Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("private containerd %s at %s", v.Version, r.ContainerdAddress())
	// CRI is off in the private one.
	ps, err := r.Client().IntrospectionService().Plugins(ctx, "id==cri")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Plugins {
		if p.InitErr == nil {
			t.Errorf("CRI plugin loaded in the private containerd")
		}
	}

	// A second agent on the same state dir uses the running one and does
	// not own it.
	r2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r2.private != nil || r2.ContainerdAddress() != r.ContainerdAddress() {
		t.Errorf("second runtime started its own containerd")
	}
	r2.Close()

	pid := r.private.cmd.Process.Pid
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("private containerd %d still running after Close: %v", pid, err)
	}
	if _, ok := probe(ctx, r.ContainerdAddress()); ok {
		t.Errorf("private containerd answers after Close")
	}
}

// TestStartLatency measures Start to first HTTP answer, against the same
// on bare containerd (image config spec, host network, no log file, no
// hardening, no CNI), so the cost of the runtime's extras shows. It only
// logs: timings on a shared machine are no pass/fail criterion.
func TestStartLatency(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 3*time.Minute)
	const rounds = 5

	measure := func(name string, start func(i int) (url string, stop func())) {
		var ds []time.Duration
		for i := range rounds {
			t0 := time.Now()
			url, stop := start(i)
			if _, err := waitHTTP(ctx, url); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
			stop()
		}
		slices.Sort(ds)
		t.Logf("cold start to first HTTP answer, %-38s min %7.1fms  median %7.1fms  max %7.1fms  (n=%d)",
			name+":", ms(ds[0]), ms(ds[len(ds)/2]), ms(ds[len(ds)-1]), len(ds))
	}
	surge := func(r *Runtime, prefix string) func(i int) (string, func()) {
		return func(i int) (string, func()) {
			id := fmt.Sprintf("%s-%d", prefix, i)
			c, err := r.Start(ctx, Spec{ID: id, Image: e.imageRef, MemoryBytes: 128 << 20, MilliCPU: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return replicaURL(c, "/"), func() {
				if err := r.Stop(ctx, id, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	r := e.base
	if err := r.EnsureImage(ctx, e.imageRef); err != nil {
		t.Fatal(err)
	}
	measure("surge Start (CNI netns, hardened)", surge(r, "lat-cni"))
	host := e.newRuntime(t, func(c *Config) { c.Network.Mode = network.ModeHost })
	measure("surge Start (host network fallback)", surge(host, "lat-host"))

	img, err := r.client.GetImage(r.nsctx(ctx), mustNormalize(t, e.imageRef))
	if err != nil {
		t.Fatal(err)
	}
	measure("bare containerd (host network)", func(i int) (string, func()) {
		nctx := r.nsctx(ctx)
		id := fmt.Sprintf("lat-bare-%d", i)
		port := freePort(t)
		ctr, err := r.client.NewContainer(nctx, id,
			client.WithNewSnapshot(id, img),
			client.WithNewSpec(oci.WithImageConfig(img), oci.WithHostNamespace(specs.NetworkNamespace),
				oci.WithEnv([]string{"PORT=" + strconv.Itoa(port)})))
		if err != nil {
			t.Fatal(err)
		}
		task, err := ctr.NewTask(nctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		exited, err := task.Wait(nctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(nctx); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("http://127.0.0.1:%d/", port), func() {
			task.Kill(nctx, syscall.SIGKILL)
			<-exited
			task.Delete(nctx)
			ctr.Delete(nctx, client.WithSnapshotCleanup)
		}
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mustNormalize(t *testing.T, ref string) string {
	t.Helper()
	n, err := normalizeRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestWarmNetworkPool: a replica starts in a network namespace of the
// warm pool (CNI ADD done ahead) and serves; Close releases what the pool
// still holds. It runs on a state dir, bridge and subnet of its own, so
// that no other runtime of the tests shares its pool directory.
func TestWarmNetworkPool(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	const bridge = "surgetr9"
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			netlink.LinkDel(l)
		}
	})
	dir := t.TempDir()
	r := e.newRuntime(t, func(c *Config) {
		c.StateDir = dir
		c.Network = network.DefaultConfig()
		c.Network.Mode = network.ModeCNI
		c.Network.Subnet = "10.244.244.0/24"
		c.Network.BridgeName = bridge
		c.Network.NetworkName = "surge-test-rt-pool"
		c.Network.PoolSize = 2
	})
	if err := r.Network().WaitPool(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.Network().Pooled(); n != 2 {
		t.Fatalf("warm pool holds %d, want 2", n)
	}
	c, err := r.Start(ctx, Spec{ID: "warm-1", Image: e.imageRef})
	if err != nil {
		t.Fatal(err)
	}
	att, err := r.Network().Get("warm-1")
	if err != nil {
		t.Fatal(err)
	}
	if att.CNIID == "" || att.IP != c.IP || c.Labels[LabelIP] != c.IP {
		t.Errorf("attachment %+v, container %+v: want a warm namespace's, its IP in the labels", att, c)
	}
	if _, err := waitHTTP(ctx, replicaURL(c, "/")); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, "warm-1", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(att.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %q after Stop: %v", att.NetNS, err)
	}
	// A restarted agent's orphan sweep leaves a live pool alone.
	if err := r.Network().WaitPool(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.newRuntime(t, func(c *Config) { *c = r.cfg; c.Network.PoolSize = 0 }).RemoveOrphans(ctx, func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if n := r.Network().Pooled(); n != 2 {
		t.Fatalf("warm pool holds %d after another runtime's RemoveOrphans, want 2", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"network/pool", "network/netns", "network/ipam/surge-test-rt-pool"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		var left []string
		for _, e := range ents {
			if e.Name() != "lock" && e.Name() != "last_reserved_ip.0" {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("%s after Close: %v", sub, left)
		}
	}
}

// TestStartCutShortLeavesNothing: a Start whose context ends at any point
// (a replica deleted while it starts) leaves no container, task, shim or
// network behind, even when containerd made the task before the cancelled
// call could hear so.
func TestStartCutShortLeavesNothing(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, 2*time.Minute)
	r := e.base
	if err := r.EnsureImage(ctx, e.imageRef); err != nil {
		t.Fatal(err)
	}
	for i := range 24 {
		id := fmt.Sprintf("cut-%d", i)
		sctx, cancel := context.WithTimeout(ctx, time.Duration(i)*4*time.Millisecond)
		c, err := r.Start(sctx, Spec{ID: id, Image: e.imageRef})
		cancel()
		if err == nil {
			// Fast enough: an ordinary replica, stopped the ordinary way.
			if err := r.Stop(ctx, c.ID, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := r.client.LoadContainer(r.nsctx(ctx), id); !errdefs.IsNotFound(err) {
			t.Errorf("Start of %s cut short at %dms: container left behind (%v)", id, i*4, err)
		}
		if _, err := r.Network().Get(id); !errors.Is(err, network.ErrNotFound) {
			t.Errorf("Start of %s cut short at %dms: network attachment left behind (%v)", id, i*4, err)
		}
	}
	// No shim of this containerd serves a cut-* task (one made after its
	// Start gave up would be a container nobody deletes).
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) && strings.HasPrefix(args[i+1], "cut-") &&
			slices.Contains(args, r.ContainerdAddress()) {
			t.Errorf("shim %s left for %s", ent.Name(), args[i+1])
		}
	}
}
