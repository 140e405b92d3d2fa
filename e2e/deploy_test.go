//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/gorilla/websocket"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/imagebuild"
)

// surgeIn runs a client verb in dir and returns its stdout, stderr and
// exit code.
func (c *cluster) surgeIn(dir string, stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(surgeBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
	cmd.Stdin = strings.NewReader(stdin)
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

func (c *cluster) mustSurgeIn(dir string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.surgeIn(dir, "", args...)
	if code != 0 {
		c.t.Fatalf("surge %s: exit %d:\n%s\nserver output:\n%s", strings.Join(args, " "), code, errOut, c.out)
	}
	return out
}

// loopback is an HTTP client that reaches NAME.surge.localhost hosts (the
// functions' URLs) on loopback, as curl does.
func loopback() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return d.DialContext(ctx, network, "127.0.0.1:"+port)
		},
	}}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := loopback().Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// lastLine is the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestDeployFromAFolder is the Deploy CLI issue's "done when": after `surge
// up`, `surge init hi && cd hi && surge deploy` prints a URL that answers,
// and `surge invoke hi` answers; then the errors a user meets on the way,
// each said at once in one line: a crash at start-up with its last log
// lines, a replica no node can fit, a bad manifest, a build error.
func TestDeployFromAFolder(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	c.start()
	dir := t.TempDir()
	c.mustSurgeIn(dir, "init", "hi")
	hi := filepath.Join(dir, "hi")

	out := c.mustSurgeIn(hi, "deploy")
	url := lastLine(out)
	_, port, _ := net.SplitHostPort(c.gateway)
	if url != "http://hi.surge.localhost:"+port {
		t.Fatalf("deploy's last line is %q, want the function's URL; stdout:\n%s", url, out)
	}
	if body := getBody(t, url+"/x"); body != "hello from hi: GET /x\n" {
		t.Errorf("GET %s/x = %q", url, body)
	}
	if got := c.mustSurgeIn(hi, "invoke", "hi"); got != "hello from hi: GET /\n" {
		t.Errorf("invoke hi = %q", got)
	}
	if got := c.mustSurgeIn(hi, "invoke", "hi", "-X", "POST", "-d", "x", "--path", "/y", "-v"); got != "hello from hi: POST /y\n" {
		t.Errorf("invoke hi -X POST = %q", got)
	}
	if ls := c.mustSurgeIn(hi, "ls"); !strings.Contains(ls, url) || !strings.Contains(ls, "1/1") {
		t.Errorf("ls lacks the URL and 1/1 ready:\n%s", ls)
	}
	if out := c.mustSurgeIn(hi, "deploy"); !strings.Contains(out, `function "hi" unchanged: revision hi-00001`) {
		t.Errorf("the same folder again: %s", out)
	}

	// A function that crashes at start-up: said at once, with its log.
	main := filepath.Join(hi, "main.go")
	src, _ := os.ReadFile(main)
	crashing := strings.Replace(string(src), "func main() {", "func main() {\n\tlog.Fatal(\"hi: no config in /etc/hi.conf\")", 1)
	if err := os.WriteFile(main, []byte(crashing), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := c.surgeIn(hi, "", "deploy")
	for _, want := range []string{"last log lines of hi-00002-", "hi: no config in /etc/hi.conf",
		`surge: function "hi": revision hi-00002 crashes: replica hi-00002-`, "exited with code 1", "the traffic stays on hi-00001"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("deploy of a crashing function: exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}
	if got := c.mustSurgeIn(hi, "invoke", "hi"); got != "hello from hi: GET /\n" {
		t.Errorf("after the crashing deploy, hi-00001 answers %q", got)
	}
	if out := c.mustSurgeIn(hi, "describe", "hi"); !strings.Contains(out, "Last log lines of hi-00002-") {
		t.Errorf("describe does not show the crashing replica's log:\n%s", out)
	}
	if err := os.WriteFile(main, src, 0o644); err != nil {
		t.Fatal(err)
	}

	// No node has that much cpu: said before any revision is made.
	_, errOut, code = c.surgeIn(hi, "", "deploy", "hi", "--cpu", "250")
	if code != 1 || !strings.Contains(errOut, `surge: function "hi": no node fits --cpu 250`) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("deploy --cpu 250: exit %d, stderr:\n%s", code, errOut)
	}
	// A bad manifest names its file, line and field.
	manifest := filepath.Join(hi, "surge.yaml")
	good, _ := os.ReadFile(manifest)
	if err := os.WriteFile(manifest, append(good, "    port: http\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = c.surgeIn(hi, "", "deploy")
	if code != 1 || !strings.Contains(errOut, "surge.yaml:8: functions[0].port: want a whole number, got \"http\"") {
		t.Errorf("a bad manifest: exit %d, stderr:\n%s", code, errOut)
	}
	if err := os.WriteFile(manifest, good, 0o644); err != nil {
		t.Fatal(err)
	}
	// A build error prints the compiler's lines.
	if err := os.WriteFile(main, append(src, "func broken() int {}\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = c.surgeIn(hi, "", "deploy")
	if code != 1 || !strings.Contains(errOut, "main.go:") || !strings.Contains(errOut, "missing return") ||
		!strings.HasSuffix(errOut, "failed: fix the errors above and deploy again\n") {
		t.Errorf("a build error: exit %d, stderr:\n%s", code, errOut)
	}
}

// TestExamples deploys every example the way its README says, and calls
// it.
func TestExamples(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	c.start()
	_, port, _ := net.SplitHostPort(c.gateway)
	invoke := func(args ...string) string { return c.mustSurge(append([]string{"invoke"}, args...)...) }

	for _, ex := range []string{"hello", "echo", "sleep", "cpu", "stream", "websocket"} {
		out := c.mustSurge("deploy", ex, "../examples/"+ex)
		if want := "http://" + ex + ".surge.localhost:" + port; lastLine(out) != want {
			t.Errorf("deploy %s printed %q last, want %s", ex, lastLine(out), want)
		}
	}
	checks := []struct {
		got, want string
	}{
		{invoke("hello"), "hello from surge"},
		{invoke("echo", "-X", "POST", "-d", `{"a":1}`, "--path", "/things"), `"body": "{\"a\":1}"`},
		{invoke("sleep", "--path", "/?ms=50"), "slept 50ms"},
		{invoke("cpu", "--path", "/?ms=20"), "burned 20ms of cpu"},
		{invoke("stream", "--path", "/?n=3&every=50ms"), "data: tick 3 of 3"},
	}
	for _, ch := range checks {
		if !strings.Contains(ch.got, ch.want) {
			t.Errorf("answer %q lacks %q", ch.got, ch.want)
		}
	}

	// The WebSocket upgrade goes through the gateway to the replica.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
	}, HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial("ws://websocket.surge.localhost:"+port+"/", nil)
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := conn.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Errorf("websocket echo = %q, %v", msg, err)
	}
	conn.Close()

	// A function that is not Go, from Debian's busybox-static, as an OCI
	// archive.
	if _, err := os.Stat("/bin/busybox"); err != nil {
		msg := "the cgi example needs Debian's busybox-static (scripts/setup.sh bench installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	archive := filepath.Join(t.TempDir(), "cgi.tar")
	mk := exec.Command("go", "run", "./examples/cgi/mkarchive", "-o", archive)
	mk.Dir = ".."
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkarchive: %v\n%s", err, out)
	}
	c.mustSurge("deploy", "cgi", "--archive", archive)
	if got := invoke("cgi", "--path", "/cgi-bin/hello?x=1"); !strings.Contains(got, "hello from busybox CGI on cgi-00001-") || !strings.Contains(got, "query: x=1") {
		t.Errorf("cgi answered %q", got)
	}
}

// TestImagesFromElsewhere: images crane pushes to the built-in registry
// with a Surge token (as docker login and docker push do), pinned to their
// digest at deploy; and an image in a private registry, pulled with a pull
// secret.
func TestImagesFromElsewhere(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	c.start()
	cfg, err := client.LoadConfig(c.config)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CertificateAuthority))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	build := func(epoch int64) v1.Image {
		t.Helper()
		o := imagebuild.DefaultOptions("../examples/hello")
		o.Created = time.Unix(epoch, 0)
		img, err := imagebuild.Build(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	digest := func(img v1.Image) string {
		d, _ := img.Digest()
		return d.String()
	}

	// crane, logged in with any user name and the token as password.
	login := []crane.Option{crane.WithAuth(&authn.Basic{Username: "me", Password: cfg.Token}), crane.WithTransport(tr)}
	ref := c.api + "/default/crane-hello:v1"
	v1img, v2img := build(1), build(2)
	if err := crane.Push(v1img, ref, login...); err != nil {
		t.Fatalf("crane push: %v", err)
	}
	c.mustSurge("deploy", "chello", "--image", ref)
	if out := c.mustSurge("describe", "chello"); !strings.Contains(out, "Pinned to:         "+digest(v1img)) {
		t.Errorf("describe does not show the pinned digest %s:\n%s", digest(v1img), out)
	}
	if err := crane.Push(v2img, ref, login...); err != nil {
		t.Fatalf("crane push v2: %v", err)
	}
	if out := c.mustSurge("deploy", "chello", "--image", ref); !strings.Contains(out, "revision chello-00002 takes all traffic") {
		t.Errorf("the tag moved, the same deploy again: %s", out)
	}
	if out := c.mustSurge("revisions", "chello"); !strings.Contains(out, "@"+digest(v1img)[:19]) || !strings.Contains(out, "@"+digest(v2img)[:19]) {
		t.Errorf("each revision shows its own digest:\n%s", out)
	}
	if _, err := crane.Digest(ref, crane.WithAuth(&authn.Basic{Username: "me", Password: "wrong"}), crane.WithTransport(tr)); err == nil {
		t.Error("crane with a wrong token was let in")
	}

	// A private registry on loopback, behind basic auth.
	reg, err := registry.New(registry.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer private.Close()
	host := strings.TrimPrefix(private.URL, "http://")
	pref, _ := name.ParseReference(host + "/team/hello:v1")
	if err := remote.Write(pref, v1img, remote.WithAuth(&authn.Basic{Username: "robot", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.surgeIn(".", "s3cret\n", "pull-secret", "set", "private", "--registry", host, "--username", "robot", "--password-stdin"); code != 0 {
		t.Fatalf("pull-secret set: %s", errOut)
	}
	c.mustSurge("deploy", "private", "--image", pref.String())
	if got := c.mustSurge("invoke", "private"); !strings.Contains(got, "hello from surge") {
		t.Errorf("the private image answered %q", got)
	}
	if out := c.mustSurge("describe", "private"); !strings.Contains(out, digest(v1img)) {
		t.Errorf("the private image is not pinned to %s:\n%s", digest(v1img), out)
	}
}
