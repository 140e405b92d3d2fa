//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/e2e/harness"
)

// dataDirTokens reads the tokens a server's data dir keeps: the admin
// token of admin.yaml, the join token and the gateway token.
func dataDirTokens(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	admin, err := client.LoadConfig(filepath.Join(dataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{"admin": admin.Token}
	for _, f := range []string{"join-token", "gateway-token"} {
		b, err := os.ReadFile(filepath.Join(dataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = strings.TrimSpace(string(b))
	}
	return out
}

// noTokenIn fails the test for each token that text shows, whole or its
// secret half.
func noTokenIn(t *testing.T, what, text string, tokens map[string]string) {
	t.Helper()
	for name, tok := range tokens {
		_, secret, _ := strings.Cut(tok, ".")
		if secret == "" || strings.Contains(text, secret) {
			t.Errorf("%s shows the %s token", what, name)
		}
	}
}

// noTokenInPs fails the test for each process of the machine whose
// command line shows a token: what ps shows every user.
func noTokenInPs(t *testing.T, tokens map[string]string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	checked := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		checked++
		noTokenIn(t, fmt.Sprintf("process %s (%s)", e.Name(), bytes.ReplaceAll(b, []byte{0}, []byte{' '})), string(b), tokens)
	}
	if checked == 0 {
		t.Error("read no process's command line")
	}
}

// cmdlineOf is a process's command line, its arguments joined by spaces.
func cmdlineOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("command line of %d: %v", pid, err)
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// TestServersShowNoToken (Security II, finding 5): surge up and surge
// server print where their tokens are, never the tokens, and no process
// shows one on its command line.
func TestServersShowNoToken(t *testing.T) {
	requireRuntime(t)
	up := newClusterOn(t, "up", "surge-sec5", "10.252.0.0/16")
	up.start()
	waitUntil(t, "surge up to say it is up", time.Minute, func() bool { return strings.Contains(up.out.String(), "Surge is up") })
	upTokens := dataDirTokens(t, up.dataDir)
	noTokenIn(t, "surge up's output", up.out.String(), upTokens)
	if want := filepath.Join(up.dataDir, "join-token"); !strings.Contains(up.out.String(), want) {
		t.Errorf("surge up does not say where the join token is (%s):\n%s", want, up.out)
	}
	noTokenIn(t, "surge up's command line", cmdlineOf(t, up.cmd.Process.Pid), upTokens)

	srv := newCluster(t, "server")
	srv.start()
	waitUntil(t, "surge server to say it is up", time.Minute, func() bool { return strings.Contains(srv.out.String(), "Run a gateway") })
	srvTokens := dataDirTokens(t, srv.dataDir)
	out := srv.out.String()
	noTokenIn(t, "surge server's output", out, srvTokens)
	join, gw := filepath.Join(srv.dataDir, "join-token"), filepath.Join(srv.dataDir, "gateway-token")
	for _, want := range []string{"surge agent --api https://" + srv.api + " --token-file " + join,
		"surge gateway --api https://" + srv.api + " --token-file " + gw} {
		if !strings.Contains(out, want) {
			t.Errorf("surge server's output lacks %q:\n%s", want, out)
		}
	}
	for name, tok := range srvTokens {
		upTokens["server's "+name] = tok
	}
	noTokenInPs(t, upTokens)
}

// TestClusterTokens runs the README's several-machines commands (token
// files, no token on any command line) and, through the real processes,
// the token verbs: a viewer token made with surge token create reads
// functions with their environment values redacted, as the gateway token
// (from SURGE_TOKEN) does; once revoked, it is refused.
func TestClusterTokens(t *testing.T) {
	requireRuntime(t)
	dir, err := os.MkdirTemp("", "st")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := harness.Start(t, harness.Options{Bin: surgeBin, README: "../README.md", Dir: dir, Servers: 1, Agents: 1, Gateways: 1})
	dataDir := filepath.Join(c.Servers[0].Dir, ".local", "share", "surge")
	tokens := dataDirTokens(t, dataDir)
	for _, p := range []*harness.Proc{c.Servers[0], c.Agents[0], c.Gateways[0]} {
		noTokenIn(t, p.Name+"'s command line", cmdlineOf(t, p.PID()), tokens)
		noTokenIn(t, p.Name+"'s output", p.Log(0), tokens)
	}
	noTokenInPs(t, tokens)

	const secret = "s3cret-db-password"
	c.MustSurge("deploy", "envy", "--image", "example.invalid/envy:v1", "--env", "DB_PASSWORD="+secret, "--no-wait")
	viewerFile := filepath.Join(t.TempDir(), "viewer-token")
	made := c.MustSurge("token", "create", "--role", "viewer", "--description", "e2e", "--file", viewerFile)
	b, _ := os.ReadFile(viewerFile)
	id, viewerSecret, _ := strings.Cut(strings.TrimSpace(string(b)), ".")
	if viewerSecret == "" || strings.Contains(made, viewerSecret) {
		t.Errorf("token create printed its secret, or wrote none: %s", made)
	}
	if ls := c.MustSurge("token", "ls"); !strings.Contains(ls, id) || !strings.Contains(ls, "viewer") || strings.Contains(ls, viewerSecret) {
		t.Errorf("token ls:\n%s\nwant the viewer token's ID and role, no secret", ls)
	}
	for _, run := range []struct {
		who  string
		args []string
		env  []string
	}{
		{"viewer", []string{"describe", "envy", "-o", "json", "--token-file", viewerFile}, nil},
		{"gateway", []string{"revisions", "envy", "-o", "json"}, []string{"SURGE_TOKEN=" + tokens["gateway-token"]}},
	} {
		out, errOut, code := surgeWith(t, c, run.env, run.args...)
		if code != 0 || strings.Contains(out, secret) || !strings.Contains(out, "(redacted)") {
			t.Errorf("the %s reads envy: exit %d, %s%s; want its env value redacted", run.who, code, out, errOut)
		}
	}
	if out := c.MustSurge("describe", "envy", "-o", "json"); !strings.Contains(out, secret) {
		t.Errorf("the admin reads envy without its env value:\n%s", out)
	}

	c.MustSurge("token", "revoke", id)
	_, errOut, code := c.Surge("ls", "--token-file", viewerFile)
	if code != 1 || !strings.Contains(errOut, "invalid or revoked token") {
		t.Errorf("the revoked viewer token: exit %d, %s; want it refused", code, errOut)
	}
}

// surgeWith runs a client verb with the admin config and more environment.
func surgeWith(t *testing.T, c *harness.Cluster, env []string, args ...string) (string, string, int) {
	t.Helper()
	cfg := filepath.Join(c.Servers[0].Dir, ".surge", "config.yaml")
	cmd := exec.Command(surgeBin, args...)
	cmd.Env = append(append(os.Environ(), "SURGE_CONFIG="+cfg), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}
