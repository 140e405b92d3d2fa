//go:build e2e

// Package e2e builds the surge binary and uses it the way a user does: the
// README's commands, restarts, and a SIGKILL in the middle of writes.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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

// cluster is one surge process with its own data dir, ports and client
// config, that a test can kill and start again.
type cluster struct {
	t       *testing.T
	verb    string
	dataDir string
	config  string
	flags   []string
	cmd     *exec.Cmd
	out     *bytes.Buffer
}

func newCluster(t *testing.T, verb string) *cluster {
	dir := t.TempDir()
	c := &cluster{
		t: t, verb: verb,
		dataDir: filepath.Join(dir, "data"),
		config:  filepath.Join(dir, "config.yaml"),
	}
	c.flags = []string{"--data-dir", c.dataDir, "--api-addr", freeAddr(t),
		"--etcd-client-addr", freeAddr(t), "--etcd-peer-addr", freeAddr(t)}
	t.Cleanup(func() { c.stop(syscall.SIGKILL) })
	return c
}

// start runs the server and waits until the CLI can talk to it.
func (c *cluster) start() {
	c.t.Helper()
	c.cmd = exec.Command(surgeBin, append([]string{c.verb}, c.flags...)...)
	c.cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	c.out = &bytes.Buffer{}
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

// readmeTryLines returns the commands of the README's "try" block.
func readmeTryLines(t *testing.T) []string {
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
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "bin/surge ") {
			lines = append(lines, strings.TrimPrefix(l, "bin/surge "))
		}
	}
	if len(lines) == 0 {
		t.Fatal("README's try block has no bin/surge lines")
	}
	return lines
}

func TestReadmeQuickStart(t *testing.T) {
	c := newCluster(t, "up")
	c.start()
	for _, line := range readmeTryLines(t) {
		c.mustSurge(strings.Fields(line)...)
	}
	out := c.mustSurge("revisions", "hello")
	if !strings.Contains(out, "hello-00002   100%") || !strings.Contains(out, "hello-00001   0%") {
		t.Errorf("after the README's commands, revisions shows:\n%s", out)
	}
}

// TestIssueDoneWhen walks the foundation issue's acceptance steps.
func TestIssueDoneWhen(t *testing.T) {
	c := newCluster(t, "up")
	c.start()
	c.mustSurge("deploy", "hello", "--image", "example.test/hello:v1")
	if out := c.mustSurge("ls"); !strings.Contains(out, "hello-00001") {
		t.Errorf("ls after the first deploy:\n%s", out)
	}
	if out := c.mustSurge("deploy", "hello", "--env", "A=1"); !strings.Contains(out, "hello-00002") {
		t.Errorf("second deploy: %s", out)
	}
	if out := c.mustSurge("deploy", "hello", "--env", "A=1"); !strings.Contains(out, "unchanged") {
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
	list, err := client.List[api.Function](context.Background(), cl, "functions", "default", nil)
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
