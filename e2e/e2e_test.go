//go:build e2e

// Package e2e builds the surge binary and uses it the way a user does: the
// README's commands, restarts, and a SIGKILL in the middle of writes.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/nodeagent/network"
)

var surgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "surge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	surgeBin = filepath.Join(dir, "surge")
	build := exec.Command("go", "build", "-o", surgeBin, "../cmd/surge")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build surge:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cluster is one surge process with its own data dir, ports and client
// config, that a test can kill and start again.
type cluster struct {
	t       *testing.T
	verb    string
	dataDir string
	config  string
	flags   []string
	cmd     *exec.Cmd
	out     *syncBuffer
	// api is the API's address, which the registry shares.
	api string
	// gateway is the gateway's address, and tlsGateway its HTTPS address
	// (surge up only).
	gateway, tlsGateway string
	// metrics is where surge up serves every role's metrics.
	metrics string
}

func newCluster(t *testing.T, verb string) *cluster {
	return newClusterOn(t, verb, "surge-e2e0", "10.245.0.0/16")
}

// newClusterOn is newCluster with the bridge and pod CIDR of a surge up:
// each test that runs one beside another's needs its own, as an agent
// owns its bridge.
func newClusterOn(t *testing.T, verb, bridge, podCIDR string) *cluster {
	dir := t.TempDir()
	c := &cluster{
		t: t, verb: verb,
		dataDir: filepath.Join(dir, "data"),
		config:  filepath.Join(dir, "config.yaml"),
	}
	c.api = freeAddr(t)
	c.flags = []string{"--data-dir", c.dataDir, "--api-addr", c.api,
		"--etcd-client-addr", freeAddr(t), "--etcd-peer-addr", freeAddr(t)}
	if verb == "server" {
		c.flags = append(c.flags, "--gossip-addr", "127.0.0.1:0")
	}
	if verb == "up" {
		// Its own bridge and addresses, so it cannot clash with a `make
		// run` on the same machine.
		c.gateway, c.tlsGateway, c.metrics = freeAddr(t), freeAddr(t), freeAddr(t)
		c.flags = append(c.flags, "--gateway-addr", c.gateway, "--tls-addr", c.tlsGateway, "--pod-cidr", podCIDR, "--bridge", bridge,
			"--gossip-addr", freeAddr(t), "--agent-addr", freeAddr(t), "--metrics-addr", c.metrics)
	}
	t.Cleanup(func() {
		if verb == "up" && c.cmd != nil {
			c.removeReplicas()
		}
		c.stop(syscall.SIGKILL)
		if verb == "up" {
			deleteBridge(t, bridge)
		}
	})
	return c
}

// removeReplicas deletes every function and waits until the agent has
// stopped their containers and released their network namespaces, then
// stops surge.
func (c *cluster) removeReplicas() {
	c.t.Helper()
	out, _, _ := c.surge("ls", "-A", "-o", "json")
	var fns []api.Function
	_ = json.Unmarshal([]byte(out), &fns)
	for _, f := range fns {
		c.surge("rm", "-n", f.Metadata.Namespace, f.Metadata.Name)
	}
	// Every container gone: no shim of this cluster's containerd left, and
	// no replica's network namespace. The agent's warm pool of namespaces
	// is released when surge stops.
	state := filepath.Join(c.dataDir, "agent", "network")
	deadline := time.Now().Add(60 * time.Second)
	for {
		left, err := network.ReplicaNamespaces(state)
		if err == nil && len(left) == 0 && len(shimsUnder(c.dataDir)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			c.t.Errorf("replicas still running 60s after their functions were removed: namespaces %v (%v), shims %v", left, err, shimsUnder(c.dataDir))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.stop(syscall.SIGTERM)
	if ents, _ := os.ReadDir(filepath.Join(state, "netns")); len(ents) > 0 {
		c.t.Errorf("%d network namespaces left after surge stopped (its warm pool's are released on SIGTERM); its output:\n%s", len(ents), c.out)
	}
	killUnder(c.t, c.dataDir)
}

// start runs the server and waits until the CLI can talk to it.
func (c *cluster) start() {
	c.t.Helper()
	c.cmd = exec.Command(surgeBin, append([]string{c.verb}, c.flags...)...)
	c.cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	c.out = &syncBuffer{}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, _, code := c.surge("version"); code == 0 {
			if out, _, _ := c.surge("version"); !strings.Contains(out, "server: unknown") {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("surge %s not serving after 60s; its output:\n%s", c.verb, c.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) stop(sig syscall.Signal) {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	_ = c.cmd.Wait()
	c.cmd = nil
}

// surge runs a client verb and returns its stdout, stderr and exit code.
func (c *cluster) surge(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(surgeBin, args...)
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

func (c *cluster) mustSurge(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.surge(args...)
	if code != 0 {
		c.t.Fatalf("surge %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (c *cluster) client() *client.Client {
	c.t.Helper()
	cfg, err := client.LoadConfig(c.config)
	if err != nil {
		c.t.Fatal(err)
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// readmeTryBlock returns the README's "try" block, the commands a new
// user runs after `make run`.
func readmeTryBlock(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- e2e:try -->")
	block, _, ok2 := strings.Cut(rest, "<!-- /e2e:try -->")
	if !ok || !ok2 {
		t.Fatal("README has no <!-- e2e:try --> block")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```sh")
	block = strings.TrimSuffix(block, "```")
	if !strings.Contains(block, "bin/surge ") {
		t.Fatal("README's try block has no bin/surge lines")
	}
	return block
}

// requireRuntime checks what running replicas needs: root, containerd,
// runc and the CNI plugins. Under CI=true their absence fails the test.
func requireRuntime(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing = append(missing, "containernetworking-plugins")
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") + " (scripts/setup.sh installs them)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestReadmeQuickStart runs the README's try block, as written, against a
// fresh `surge up`: build, deploy, curl through the gateway, describe.
func TestReadmeQuickStart(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	c.start()

	// The block as a user runs it from the repository root: bin/surge is
	// the binary under test, and the gateway is on this test's port.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(surgeBin, filepath.Join(root, "bin", "surge")); err != nil {
		t.Fatal(err)
	}
	examples, _ := filepath.Abs("../examples")
	if err := os.Symlink(examples, filepath.Join(root, "examples")); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(c.gateway)
	_, tlsPort, _ := net.SplitHostPort(c.tlsGateway)
	script := strings.NewReplacer(":8080/", ":"+port+"/", ":8443/", ":"+tlsPort+"/", "~/.local/share/surge/", c.dataDir+"/").Replace(readmeTryBlock(t))
	script = "set -euo pipefail\n" + script
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README try block failed: %v\n%s\nserver output:\n%s", err, out, c.out)
	}
	got := string(out)
	if n := strings.Count(got, "hello from surge"); n != 3 {
		t.Errorf("want three answers from the function through the gateway (two over HTTP, one over HTTPS), got %d:\n%s", n, got)
	}
	for _, want := range []string{"hello-00001", "Ready", "hello-00002   100%"} {
		if !strings.Contains(got, want) {
			t.Errorf("README output lacks %q:\n%s", want, got)
		}
	}

	// A deploy whose image does not pull takes no traffic: it fails after
	// its wait, saying why, and hello-00002 goes on answering.
	_, errOut, code := c.surge("deploy", "hello", "--image", c.api+"/default/nope:v9", "--wait-timeout", "10s")
	for _, want := range []string{"waiting for hello-00003 to be Ready: replica hello-00003-", "not found",
		"revision hello-00003 has no Ready replica after 10s", "the traffic stays on hello-00002"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("deploy of a missing image: exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
	for i := range 20 {
		req, _ := http.NewRequest("GET", "http://"+c.gateway+"/", nil)
		req.Host = "hello.surge.localhost"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d after the failed deploy: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "host: hello-00002-") {
			t.Fatalf("request %d after the failed deploy: %s %q, want 200 from a replica of hello-00002", i, resp.Status, body)
		}
	}
	if out := c.mustSurge("describe", "hello"); !strings.Contains(out, "hello-00003 (rolling out: no Ready replica yet)") {
		t.Errorf("describe after the failed deploy does not say hello-00003 is rolling out:\n%s", out)
	}
}

// TestIssueDoneWhen walks the foundation issue's acceptance steps.
func TestIssueDoneWhen(t *testing.T) {
	c := newCluster(t, "server")
	c.start()
	// A server alone runs no replica: the deploys do not wait for one.
	c.mustSurge("deploy", "hello", "--image", "example.test/hello:v1", "--no-wait")
	if out := c.mustSurge("ls"); !strings.Contains(out, "hello-00001") {
		t.Errorf("ls after the first deploy:\n%s", out)
	}
	if out := c.mustSurge("deploy", "hello", "--env", "A=1", "--no-wait"); !strings.Contains(out, "hello-00002") {
		t.Errorf("second deploy: %s", out)
	}
	if out := c.mustSurge("deploy", "hello", "--env", "A=1", "--no-wait"); !strings.Contains(out, "unchanged") {
		t.Errorf("same deploy again: %s", out)
	}
	_, errOut, code := c.surge("deploy", "Bad_Name", "--image", "x")
	want := "surge: function \"Bad_Name\": name must be 1 to 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit\n"
	if code != 1 || errOut != want {
		t.Errorf("deploy Bad_Name: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if _, errOut, code := c.surge("describe"); code != 2 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("describe without a name: exit %d, stderr %q; want 2 and one line", code, errOut)
	}

	c.stop(syscall.SIGTERM)
	c.start()
	out := c.mustSurge("ls", "-o", "json")
	if !strings.Contains(out, `"latestRevision": "hello-00002"`) {
		t.Errorf("after a restart, ls -o json:\n%s", out)
	}
	if out := c.mustSurge("describe", "hello"); !strings.Contains(out, "A=1") {
		t.Errorf("after a restart, describe:\n%s", out)
	}
}

// TestWritesSurviveSIGKILL kills the server in the middle of a stream of
// deploys; every deploy it acknowledged must be there after a restart.
func TestWritesSurviveSIGKILL(t *testing.T) {
	c := newCluster(t, "server")
	c.start()
	cl := c.client()

	var mu sync.Mutex
	acked := map[string]string{} // function → revision the server answered
	writes := 0
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const writers, perWriter = 4, 400
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				name := fmt.Sprintf("fn-%d-%d", w, i%20)
				f := &api.Function{Metadata: api.ObjectMeta{Name: name},
					Spec: api.FunctionSpec{Image: "example.test/x:v1", Env: []api.EnvVar{{Name: "I", Value: fmt.Sprint(i)}}}}
				out, err := cl.PutFunction(ctx, f)
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[name] = out.Status.LatestRevision
				writes++
				mu.Unlock()
			}
		}()
	}
	// Kill once a good number of writes are acknowledged, mid-stream.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := writes
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.stop(syscall.SIGKILL)
	cancel()
	wg.Wait()
	if len(acked) == 0 {
		t.Fatalf("no write was acknowledged before the kill; server output:\n%s", c.out)
	}

	c.start()
	cl = c.client()
	list, err := client.List[api.Function](context.Background(), cl, "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, f := range list.Items {
		have[f.Metadata.Name] = f.Status.LatestRevision
	}
	for name, rev := range acked {
		_, n1, _ := api.ParseRevisionName(rev)
		got, ok := have[name]
		_, n2, _ := api.ParseRevisionName(got)
		if !ok || n2 < n1 {
			t.Errorf("function %s: acknowledged revision %s, after SIGKILL and restart have %q", name, rev, got)
		}
	}
	t.Logf("%d deploys of %d functions acknowledged before SIGKILL, all present after restart", writes, len(acked))
}
