//go:build e2e

package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSurgeUpServesHTTPS is the HTTPS issue's "done when": after `surge
// up`, the line it prints, `curl --cacert DATA_DIR/pki/gateway-ca.crt
// https://NAME.surge.localhost:8443/`, reaches a function over TLS with a
// certificate curl checks against the gateway CA; a function in another
// namespace gets its own certificate as it appears; and a function deployed
// with --https-redirect sends its plain HTTP clients there.
func TestSurgeUpServesHTTPS(t *testing.T) {
	requireRuntime(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed (scripts/setup.sh bench installs it)")
		}
		t.Skip("curl is not installed")
	}
	c := newClusterOn(t, "up", "surge-tls0", "10.247.0.0/16")
	c.start()
	ca := filepath.Join(c.dataDir, "pki", "gateway-ca.crt")
	_, port, _ := net.SplitHostPort(c.tlsGateway)
	_, plainPort, _ := net.SplitHostPort(c.gateway)
	printed := "curl --cacert " + ca + " https://hi.surge.localhost:" + port + "/"
	if !strings.Contains(c.out.String(), printed) {
		t.Errorf("surge up does not print how to trust the gateway CA (%q):\n%s", printed, c.out)
	}

	examples, _ := filepath.Abs("../examples")
	c.mustSurge("deploy", "hello", filepath.Join(examples, "hello"))
	c.mustSurge("deploy", "hello", filepath.Join(examples, "hello"), "-n", "team")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--cacert", ca}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s\nserver output:\n%s", strings.Join(args, " "), err, out, c.out)
		}
		return string(out)
	}
	for _, url := range []string{
		"https://hello.surge.localhost:" + port + "/",
		"https://hello.team.surge.localhost:" + port + "/",
		"https://localhost:" + port + "/fn/hello/",
	} {
		if out := run(url); !strings.Contains(out, "hello from surge") {
			t.Errorf("curl --cacert %s %s: %q", ca, url, out)
		}
	}
	// The certificates are on disk, one for the domain and one per
	// namespace, each made within a round of the gateway's certificate loop.
	for _, f := range []string{"_domain.crt", "default.crt", "team.crt"} {
		path := filepath.Join(c.dataDir, "gateway-tls", f)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			_, err := os.Stat(path)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("gateway certificate: %v", err)
				break
			}
		}
	}

	c.mustSurge("deploy", "hello", "--https-redirect")
	plain := "http://hello.surge.localhost:" + plainPort + "/?y=1"
	if out := run("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", plain); out != "308 https://hello.surge.localhost:"+port+"/?y=1" {
		t.Errorf("plain GET with --https-redirect: %q, want a 308 to HTTPS", out)
	}
	if out := run("-L", plain); !strings.Contains(out, "hello from surge") {
		t.Errorf("curl -L %s: %q", plain, out)
	}
	if out := run("http://hello.team.surge.localhost:" + plainPort + "/"); !strings.Contains(out, "hello from surge") {
		t.Errorf("team's hello, without the redirect: %q", out)
	}
}
