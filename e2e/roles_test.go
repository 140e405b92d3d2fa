//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// proc is one surge role run as its own process.
type proc struct {
	t    *testing.T
	args []string
	env  []string
	cmd  *exec.Cmd
	out  syncBuffer
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(surgeBin, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) stop(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// shimsUnder returns the PIDs of containerd shims serving a containerd
// whose socket is under dir.
func shimsUnder(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte("containerd-shim")) && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteBridge removes a bridge an agent of the test made: the agent
// leaves it by design (a restarted agent keeps using it), a test must not.
// The agent's policy chains must be gone already (see noPolicyLeft).
func deleteBridge(t *testing.T, name string) {
	t.Helper()
	noPolicyLeft(t, name)
	if l, err := netlink.LinkByName(name); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("delete bridge %s: %v", name, err)
		}
	}
}

// killUnder kills every process whose command line names dir (a private
// containerd, its shims) and the shims' containers, and waits for them.
func killUnder(t *testing.T, dir string) {
	t.Helper()
	shims := map[string]bool{}
	for _, pid := range shimsUnder(dir) {
		shims[strconv.Itoa(pid)] = true
	}
	ents, _ := os.ReadDir("/proc")
	var victims []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		child := len(fields) > 1 && shims[fields[1]]
		if child || bytes.Contains(b, []byte(dir)) {
			victims = append(victims, pid)
		}
	}
	var procs []*os.Process
	for _, pid := range victims {
		if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.SIGKILL) == nil {
			procs = append(procs, p)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range procs {
		for p.Signal(syscall.Signal(0)) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// functionPIDs returns the PIDs of the named replicas' processes on this
// host: the hello image's /function whose parent, the containerd shim, runs
// with "-id REPLICA".
func functionPIDs(t *testing.T, replicas []api.Replica) []int {
	t.Helper()
	names := map[string]bool{}
	for _, r := range replicas {
		names[r.Metadata.Name] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || string(bytes.TrimRight(b, "\x00")) != "/function" {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// stat is "PID (comm) STATE PPID ..."; comm has no ')' here.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 {
			continue
		}
		parent, err := os.ReadFile(filepath.Join("/proc", fields[1], "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(parent), "\x00")
		if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) && names[args[i+1]] {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// TestAgentSIGKILLUnderTraffic runs the server, a node agent and a gateway
// as separate processes, and SIGKILLs the agent three times while requests
// flow: the gateway keeps routing, the restarted agent adopts the running
// containers (same PIDs), and nothing restarts or fails.
func TestAgentSIGKILLUnderTraffic(t *testing.T) {
	requireRuntime(t)
	srv := newCluster(t, "server")
	srv.flags = append(srv.flags, "--pod-cidr", "10.246.0.0/16")
	srv.start()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(srv.dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	admin, err := client.LoadConfig(srv.config)
	if err != nil {
		t.Fatal(err)
	}
	writeConfig := func(name, token string) string {
		cfg := *admin
		cfg.Token = token
		b, _ := cfg.Marshal()
		p := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	join := read("join-token")
	stateDir := filepath.Join(t.TempDir(), "agent")
	gossipAddr := freeAddr(t)
	agent := &proc{t: t, env: []string{"SURGE_CONFIG=" + writeConfig("agent", join)}, args: []string{"agent",
		"--node-name", "e2e-node", "--state-dir", stateDir, "--bridge", "surge-e2e1",
		"--gossip-addr", gossipAddr, "--agent-addr", freeAddr(t)}}
	gwAddr := freeAddr(t)
	gw := &proc{t: t, env: []string{"SURGE_CONFIG=" + writeConfig("gateway", read("gateway-token"))}, args: []string{"gateway",
		"--gateway-addr", gwAddr, "--gossip-addr", freeAddr(t), "--join", gossipAddr}}
	agent.start()
	gw.start()
	t.Cleanup(func() {
		srv.surge("rm", "hello")
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if left, err := network.ReplicaNamespaces(filepath.Join(stateDir, "network")); err != nil || len(left) == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		gw.stop(syscall.SIGTERM)
		agent.stop(syscall.SIGTERM)
		// The agent reused a private containerd an earlier (killed) agent
		// started, so none of them stops it: the test does.
		killUnder(t, stateDir)
		deleteBridge(t, "surge-e2e1")
		if t.Failed() {
			t.Logf("agent output:\n%s\ngateway output:\n%s", agent.out.String(), gw.out.String())
		}
	})

	image := strings.TrimSpace(srv.mustSurge("build", "../examples/hello", "-t", "hello:v1"))
	srv.mustSurge("deploy", "hello", "--image", image, "--min-scale", "2")
	cl := srv.client()
	ctx := context.Background()
	ready := func() []api.Replica {
		l, err := client.List[api.Replica](ctx, cl, "default", nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []api.Replica
		for _, r := range l.Items {
			if r.Status.Phase == api.ReplicaReady {
				out = append(out, r)
			}
		}
		return out
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(ready()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("two replicas not Ready after 90s; agent output:\n%s", agent.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	replicas := ready()
	pids := functionPIDs(t, replicas)
	if len(pids) != 2 {
		t.Fatalf("want the 2 replicas' processes on this host, found PIDs %v", pids)
	}

	httpc := &http.Client{Timeout: 10 * time.Second}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", "http://"+gwAddr+"/fn/hello/", nil)
			resp, err := httpc.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("%d %s", resp.StatusCode, b)
				}
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}()
	for i := range 3 {
		before := ok.Load()
		agent.stop(syscall.SIGKILL)
		agent.start()
		// Wait for traffic to keep flowing and the new agent to register.
		deadline := time.Now().Add(30 * time.Second)
		for ok.Load() < before+200 {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: traffic stalled", i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second) // let the new agent adopt before the next kill
	}
	close(stop)
	<-done

	if got := functionPIDs(t, replicas); !slices.Equal(got, pids) {
		t.Errorf("replica PIDs %v after 3 agent kills, want the same %v", got, pids)
	}
	for _, r := range ready() {
		if r.Status.Restarts != 0 {
			t.Errorf("replica %s restarted %d times", r.Metadata.Name, r.Status.Restarts)
		}
	}
	if n := len(ready()); n != 2 {
		t.Errorf("%d Ready replicas after the kills, want 2", n)
	}
	t.Logf("%d requests during 3 agent SIGKILLs, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed; first: %v", failed.Load(), firstErr.Load())
	}
}
