package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// Options shape a cluster.
type Options struct {
	// Bin is the surge binary every process runs.
	Bin string
	// README is the path of the README whose "several machines" block
	// (between <!-- e2e:cluster --> and <!-- /e2e:cluster -->) holds the
	// commands each role is started with, as a user types them.
	README string
	// Dir holds every host's home: data dirs, state dirs, logs.
	Dir string
	// Servers, Agents and Gateways count the roles. The first server
	// starts a cluster; the others join it (the README's `surge server
	// --join-server` line). Gateways run on the first agents' hosts.
	Servers, Agents, Gateways int
	// LogLevel is passed to every role.
	LogLevel string
}

// Cluster is a running cluster. Its methods are for the test's goroutine.
type Cluster struct {
	t    testing.TB
	opts Options
	Net  *Net
	// Servers, Agents and Gateways are the roles' processes; an agent's
	// node is named after its host.
	Servers, Agents, Gateways []*Proc
	// config is the admin client config the test's CLI uses: every
	// server's API, to fail over between.
	config string
	// commands are the README's command lines, by role.
	commands map[string]string
	api      *client.Client
}

// Ports of the roles, as the README's commands set them.
const (
	APIPort     = 7070
	GatewayPort = 8080
	// GossipPorts are the server's, the agents' and the gateways'.
	GossipPorts = "7945,7946,7947"
)

// Start builds the network, starts every role from the README's commands,
// waits until every node is alive and every gateway answers, and registers
// the cleanup that removes all of it and checks that nothing is left.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Servers < 1 {
		t.Fatalf("harness: %d servers asked; a cluster has at least one", o.Servers)
	}
	if o.Gateways > o.Agents {
		t.Fatalf("harness: %d gateways need as many agent hosts, have %d", o.Gateways, o.Agents)
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	cmds, err := readmeCommands(o.README)
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNet(RandomPrefix())
	if err != nil {
		t.Fatalf("harness network: %v", err)
	}
	c := &Cluster{t: t, opts: o, Net: n, commands: cmds}
	t.Cleanup(c.cleanup)

	for i := range o.Servers {
		role := "server-join"
		if i == 0 {
			role = "server"
		}
		c.Servers = append(c.Servers, c.newProc(role, fmt.Sprintf("s%d", i+1), nil))
	}
	server := c.Servers[0].Host
	// API lists every server's API, as the README has the other machines
	// name them.
	apis := make([]string, len(c.Servers))
	for i := range c.Servers {
		apis[i] = c.ServerURL(i)
	}
	env := []string{"SERVER_IP=" + server.IP.String(), "API=" + strings.Join(apis, ",")}
	for _, p := range c.Servers {
		p.Env = append(p.Env, env...)
	}
	c.start(c.Servers[0])
	dataDir := filepath.Join(c.Servers[0].Dir, ".local", "share", "surge")
	firstConfig := filepath.Join(c.Servers[0].Dir, ".surge", "config.yaml")
	c.waitFor("the server's tokens", time.Minute, func() bool {
		return exists(filepath.Join(dataDir, "gateway-token")) && exists(filepath.Join(dataDir, "server-token")) && exists(firstConfig)
	})
	// What the README says to copy to the other servers, which then join.
	serverFiles := map[string]string{"ca.crt": filepath.Join(dataDir, "pki", "ca.crt"), "server-token": filepath.Join(dataDir, "server-token")}
	for _, p := range c.Servers[1:] {
		copyFiles(t, serverFiles, p.Dir)
		c.start(p)
	}
	cfg, err := client.LoadConfig(firstConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server = strings.Join(apis, ",")
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c.config = filepath.Join(o.Dir, "admin-config.yaml")
	if err := os.WriteFile(c.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.api, err = client.New(cfg); err != nil {
		t.Fatal(err)
	}
	c.waitFor(fmt.Sprintf("%d servers, each a voting etcd member", o.Servers), 2*time.Minute, func() bool {
		st, err := c.ClusterStatus()
		if err != nil || len(st.Servers) != o.Servers || (o.Servers > 1 && len(st.Members) != o.Servers) {
			return false
		}
		for _, m := range st.Members {
			if m.Learner {
				return false
			}
		}
		return true
	})

	// What the README says to copy to every other machine.
	secrets := map[string]string{"ca.crt": filepath.Join(dataDir, "pki", "ca.crt"),
		"join-token": filepath.Join(dataDir, "join-token"), "gateway-token": filepath.Join(dataDir, "gateway-token")}
	for i := range o.Agents {
		name := fmt.Sprintf("a%d", i+1)
		p := c.newProc("agent", name, env)
		state := filepath.Join(p.Dir, "agent")
		// What a real machine has by default: its own state dir and its
		// own containerd (none answers where this points, so the agent
		// starts a private one under the state dir).
		p.Args = []string{"--state-dir", state, "--containerd-address", filepath.Join(state, "no-containerd.sock")}
		copyFiles(t, secrets, p.Dir)
		c.Agents = append(c.Agents, p)
		c.start(p)
	}
	for i := range o.Gateways {
		host := c.Agents[i].Host
		p := c.newProcOn("gateway", host.Name+"-gateway", host, env)
		copyFiles(t, secrets, p.Dir)
		c.Gateways = append(c.Gateways, p)
		c.start(p)
	}
	c.waitFor(fmt.Sprintf("%d nodes alive", o.Agents), 2*time.Minute, func() bool {
		return len(c.AliveNodes()) == o.Agents
	})
	for i := range c.Gateways {
		url := "http://" + c.GatewayAddr(i) + "/"
		c.waitFor("gateway "+c.Gateways[i].Name+" to answer", time.Minute, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return true
		})
	}
	return c
}

// newProc makes a role's process on a host of its own.
func (c *Cluster) newProc(role, name string, env []string) *Proc {
	c.t.Helper()
	h, err := c.Net.AddHost(name)
	if err != nil {
		c.t.Fatalf("harness host %s: %v", name, err)
	}
	return c.newProcOn(role, name, h, env)
}

// newProcOn makes a role's process on a given host. Each process has a
// home of its own: the defaults under ~ (data dir, client config) are then
// the process's, as on a machine of its own.
func (c *Cluster) newProcOn(role, name string, h *Host, env []string) *Proc {
	c.t.Helper()
	home := filepath.Join(c.opts.Dir, name)
	if err := os.MkdirAll(home, 0o700); err != nil {
		c.t.Fatal(err)
	}
	return &Proc{
		Name: strings.TrimSuffix(role, "-join") + " " + name, Host: h, Script: c.commands[role],
		Env: append([]string{"HOME=" + home, "NODE_IP=" + h.IP.String(), "SURGE_CONFIG=", "XDG_DATA_HOME=",
			"PATH=" + filepath.Dir(c.opts.Bin) + ":" + os.Getenv("PATH")}, env...),
		Args: nil, Dir: home, LogPath: filepath.Join(c.opts.Dir, name+".log"),
	}
}

func (c *Cluster) start(p *Proc) {
	c.t.Helper()
	p.Args = append(p.Args, "--log-level", c.opts.LogLevel)
	if err := p.Start(); err != nil {
		c.t.Fatal(err)
	}
}

// waitFor polls cond every 100ms until it holds, failing the test with
// every process's last lines after timeout.
func (c *Cluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("harness: no %s after %s\n%s", what, timeout, c.Logs(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Logs returns the last n lines of every process's output.
func (c *Cluster) Logs(n int) string {
	var b strings.Builder
	for _, p := range c.procs() {
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.Name, p.LogPath, p.Log(n))
	}
	return b.String()
}

func (c *Cluster) procs() []*Proc {
	return slices.Concat(c.Gateways, c.Agents, c.Servers)
}

// GatewayAddr is gateway i's HOST:PORT.
func (c *Cluster) GatewayAddr(i int) string {
	return c.Gateways[i].Host.IP.String() + ":" + strconv.Itoa(GatewayPort)
}

// Client is an admin API client of every server, failing over between
// them.
func (c *Cluster) Client() *client.Client { return c.api }

// ConfigPath is the admin client config the test's CLI uses: every
// server's API, the CA and the admin token.
func (c *Cluster) ConfigPath() string { return c.config }

// ServerURL is server i's API URL.
func (c *Cluster) ServerURL(i int) string {
	return "https://" + c.Servers[i].Host.IP.String() + ":" + strconv.Itoa(APIPort)
}

// Server returns the server process of a server name ("s2").
func (c *Cluster) Server(name string) *Proc {
	for _, p := range c.Servers {
		if p.Host.Name == name {
			return p
		}
	}
	c.t.Fatalf("no server %q", name)
	return nil
}

// ClusterStatus reads GET /v1/cluster: the servers, the controllers'
// leader, etcd's leader and members.
func (c *Cluster) ClusterStatus() (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st api.ClusterStatus
	if err := c.api.Do(ctx, http.MethodGet, "/v1/cluster", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Nodes lists the nodes the API knows.
func (c *Cluster) Nodes() ([]api.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := client.List[api.Node](ctx, c.api, "", nil)
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// AliveNodes names the nodes the API holds alive.
func (c *Cluster) AliveNodes() []string {
	nodes, err := c.Nodes()
	if err != nil {
		return nil
	}
	var alive []string
	for _, n := range nodes {
		if n.Status.State == api.NodeAlive {
			alive = append(alive, n.Metadata.Name)
		}
	}
	return alive
}

// Replicas lists a function's replicas in the default namespace.
func (c *Cluster) Replicas(function string) ([]api.Replica, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := client.List[api.Replica](ctx, c.api, api.DefaultNamespace, map[string][]string{"function": {function}})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// Tracker records which node each replica of a function was bound to, for
// replicas that come and go during a scenario.
type Tracker struct {
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	nodeOf map[string]string
}

// Track starts polling a function's replicas every 100ms until Stop.
func (c *Cluster) Track(function string) *Tracker {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Tracker{stop: cancel, done: make(chan struct{}), nodeOf: map[string]string{}}
	go func() {
		defer close(tr.done)
		for ctx.Err() == nil {
			if reps, err := c.Replicas(function); err == nil {
				tr.mu.Lock()
				for _, r := range reps {
					if r.Spec.NodeName != "" {
						tr.nodeOf[r.Metadata.Name] = r.Spec.NodeName
					}
				}
				tr.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return tr
}

// Node returns the node a replica was seen bound to ("" if never seen).
func (tr *Tracker) Node(replica string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.nodeOf[replica]
}

// Stop ends the polling.
func (tr *Tracker) Stop() { tr.stop(); <-tr.done }

// Surge runs a client verb from the test's own namespace with the admin
// config, and returns its stdout, stderr and exit code.
func (c *Cluster) Surge(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(c.opts.Bin, args...)
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	c.t.Fatalf("run surge %v: %v", args, err)
	return "", "", -1
}

// MustSurge is Surge that fails the test on a non-zero exit.
func (c *Cluster) MustSurge(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.Surge(args...)
	if code != 0 {
		c.t.Fatalf("surge %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// AgentOf returns the agent process of a node.
func (c *Cluster) AgentOf(node string) *Proc {
	for _, a := range c.Agents {
		if a.Host.Name == node {
			return a
		}
	}
	c.t.Fatalf("no agent for node %q", node)
	return nil
}

// cleanup removes the functions, waits for their replicas to go, stops
// every process, removes what outlives them, and checks that nothing the
// cluster made is left.
func (c *Cluster) cleanup() {
	t := c.t
	if c.api != nil && slices.ContainsFunc(c.Servers, (*Proc).Running) {
		c.removeFunctions()
	}
	for _, p := range c.procs() {
		if err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Logf("%s ended with %v", p.Name, err)
		}
	}
	if keep := os.Getenv("E2E_KEEP_LOGS"); keep != "" && t.Failed() {
		// Asked for: every process's whole log of a failed test, kept.
		logs := map[string]string{}
		for _, p := range c.procs() {
			logs[filepath.Base(p.LogPath)] = p.LogPath
		}
		for _, p := range c.Servers {
			logs[p.Host.Name+"-etcd.log"] = filepath.Join(p.Dir, ".local", "share", "surge", "logs", "etcd.log")
		}
		for name, path := range logs {
			if b, err := os.ReadFile(path); err == nil && os.MkdirAll(keep, 0o755) == nil {
				_ = os.WriteFile(filepath.Join(keep, name), b, 0o644)
			}
		}
	}
	killUnder(c.opts.Dir)
	unmountUnder(c.opts.Dir)
	if err := c.Net.Close(); err != nil {
		t.Errorf("harness: %v", err)
	}
	if left := leftovers(c.Net.Prefix, c.opts.Dir); len(left) > 0 {
		t.Errorf("harness left on the machine: %s", strings.Join(left, "; "))
	}
}

// removeFunctions deletes every function and waits until every agent has
// stopped its containers and released their namespaces, which outlive an
// agent's SIGTERM by design.
func (c *Cluster) removeFunctions() {
	out, _, code := c.Surge("ls", "-A", "-o", "json")
	var fns []api.Function
	if code == 0 {
		_ = json.Unmarshal([]byte(out), &fns)
	}
	for _, f := range fns {
		c.Surge("rm", "-n", f.Metadata.Namespace, f.Metadata.Name)
	}
	deadline := time.Now().Add(time.Minute)
	for _, a := range c.Agents {
		state := filepath.Join(a.Dir, "agent", "network")
		for {
			left, err := network.ReplicaNamespaces(state)
			if err == nil && len(left) == 0 {
				break
			}
			if time.Now().After(deadline) || !a.Running() {
				c.t.Logf("harness: %s still holds replica namespaces %v (%v)", a.Name, left, err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// killUnder SIGKILLs every process whose command line names dir (private
// containerds, their shims) and the shims' children (containers), and
// waits for them to go.
func killUnder(dir string) {
	var victims []int
	for pid, cmdline := range processes() {
		if strings.Contains(cmdline, dir) {
			victims = append(victims, pid)
			victims = append(victims, childrenOf(pid)...)
		}
	}
	for _, pid := range victims {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range victims {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// processes maps each PID to its command line, NULs as spaces.
func processes() map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil {
			out[pid] = string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
		}
	}
	return out
}

// childrenOf lists the PIDs whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	for p := range processes() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// unmountUnder unmounts every mount point under dir (pinned replica
// namespaces of an agent that was killed).
func unmountUnder(dir string) {
	for _, m := range mountsUnder(dir) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
}

// mountsUnder lists the mount points under dir.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// leftovers lists what the cluster made that is still on the machine.
func leftovers(prefix, dir string) []string {
	var left []string
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	ifaces, _ := os.ReadDir("/sys/class/net")
	for _, e := range ifaces {
		if strings.HasPrefix(e.Name(), prefix) {
			left = append(left, "link "+e.Name())
		}
	}
	for _, m := range mountsUnder(dir) {
		left = append(left, "mount "+m)
	}
	for pid, cmdline := range processes() {
		if strings.Contains(cmdline, dir) {
			left = append(left, fmt.Sprintf("process %d (%s)", pid, cmdline))
		}
	}
	slices.Sort(left)
	return left
}

// copyFiles copies each source to dir under its name.
func copyFiles(t testing.TB, files map[string]string, dir string) {
	t.Helper()
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// readmeCommands reads the README's cluster block and returns the command
// line of each role (the first line that runs `surge ROLE`): "server" is
// the first server's, "server-join" the others' (with --join-server).
func readmeCommands(readme string) (map[string]string, error) {
	b, err := os.ReadFile(readme)
	if err != nil {
		return nil, err
	}
	_, rest, ok := strings.Cut(string(b), "<!-- e2e:cluster -->")
	block, _, ok2 := strings.Cut(rest, "<!-- /e2e:cluster -->")
	if !ok || !ok2 {
		return nil, fmt.Errorf("%s has no <!-- e2e:cluster --> block", readme)
	}
	cmds := map[string]string{}
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		for _, role := range []string{"server", "agent", "gateway"} {
			if role == "server" && strings.Contains(line, "--join-server") {
				role = "server-join"
			}
			if strings.HasPrefix(line, "surge "+strings.TrimSuffix(role, "-join")+" ") && cmds[role] == "" {
				cmds[role] = line
			}
		}
	}
	for _, role := range []string{"server", "server-join", "agent", "gateway"} {
		if cmds[role] == "" {
			what := "surge " + role
			if role == "server-join" {
				what = "surge server --join-server"
			}
			return nil, fmt.Errorf("%s's cluster block has no `%s` line", readme, what)
		}
	}
	return cmds, nil
}
