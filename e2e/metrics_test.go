//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

// TestPrometheusScrapesSurgeUp runs the real Prometheus (Debian's package)
// against surge up, as the README's "Operating Surge" says to: discovery
// through GET /v1/sd/prometheus with a metrics token in a file, the API's
// CA, a scrape every second. Under a bounded load, every target must be
// up and the gateway's request counter must move; then every PromQL
// expression of deploy/grafana/surge.json must return data, so that the
// dashboard is proven against what the roles serve, not only parsed. Each
// metrics endpoint also passes promtool's linter.
func TestPrometheusScrapesSurgeUp(t *testing.T) {
	requireRuntime(t)
	promBin := requireBinary(t, "prometheus")
	telemetrytest.RequirePromtool(t)

	c := newClusterOn(t, "up", "surge-met0", "10.249.0.0/16")
	c.start()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "metrics-token")
	c.mustSurge("token", "create", "--role", "metrics", "--description", "prometheus", "--file", tokenFile)
	c.mustSurge("deploy", "hello", "../examples/hello")

	ca, err := os.ReadFile(filepath.Join(c.dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()

	// surge up's one metrics address, on loopback: no token. The
	// autoscaler's gauges come with its next tick.
	var body string
	waitUntil(t, "every role's metrics at surge up's metrics address", 30*time.Second, func() bool {
		body = httpGet(t, hc, "http://"+c.metrics+"/metrics", "")
		for _, want := range []string{"surge_gateway_requests_total", "surge_nodeagent_replicas", "surge_apiserver_requests_total",
			"surge_autoscaler_desired_replicas", "surge_scheduler_placements_total", "surge_build_info", "go_goroutines"} {
			if !strings.Contains(body, want) {
				return false
			}
		}
		return true
	})
	telemetrytest.CheckText(t, "surge up's metrics address", []byte(body))
	// The API's /metrics, with the metrics token.
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	apiMetrics := httpGet(t, hc, "https://"+c.api+"/metrics", strings.TrimSpace(string(token)))
	telemetrytest.CheckText(t, "the API's /metrics", []byte(apiMetrics))

	promAddr := freeAddr(t)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: surge
    http_sd_configs:
      - url: https://%[1]s/v1/sd/prometheus
        refresh_interval: 1s
        authorization: {type: Bearer, credentials_file: %[2]s}
        tls_config: {ca_file: %[3]s}
    authorization: {type: Bearer, credentials_file: %[2]s}
    tls_config: {ca_file: %[3]s}
`, c.api, tokenFile, filepath.Join(c.dataDir, "pki", "ca.crt"))
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	promOut := &syncBuffer{}
	prom.Stdout, prom.Stderr = promOut, promOut
	prom.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-prom.Process.Pid, syscall.SIGKILL)
		_ = prom.Wait()
	})

	// A bounded load: a request every 20ms while the test waits, for at
	// most two minutes.
	ctx, stopLoad := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stopLoad()
	loadDone := make(chan int)
	go func() {
		sent := 0
		hc := &http.Client{Timeout: 5 * time.Second}
		defer hc.CloseIdleConnections()
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.gateway+"/", nil)
			req.Host = "hello.surge.localhost"
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent++
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
		loadDone <- sent
	}()

	q := promQuerier{t: t, base: "http://" + promAddr}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		// surge up's roles share one address: one target.
		if up, all := q.targets(); all >= 1 && up == all {
			break
		}
		if time.Now().After(deadline) {
			var targets json.RawMessage
			q.get("/api/v1/targets", &targets)
			t.Fatalf("not every discovered target up in Prometheus after 90s: %s\ndiscovery: %s\nprometheus:\n%s\nsurge:\n%s",
				targets, httpGet(t, hc, "https://"+c.api+"/v1/sd/prometheus", strings.TrimSpace(string(token))), promOut, c.out)
		}
	}
	waitUntil(t, "the gateway's request counter moving in Prometheus", 60*time.Second, func() bool {
		r := q.query(`sum(increase(surge_gateway_requests_total{function="hello",code_class="2xx"}[30s]))`)
		return len(r) == 1 && r[0].value() > 0
	})

	// Every expression of the dashboard returns data.
	exprs := dashboardExprs(t, "../deploy/grafana/surge.json")
	if len(exprs) < 15 {
		t.Fatalf("the dashboard has %d expressions", len(exprs))
	}
	missing := slices.Clone(exprs)
	for deadline := time.Now().Add(90 * time.Second); len(missing) > 0; time.Sleep(time.Second) {
		missing = slices.DeleteFunc(missing, func(e string) bool { return len(q.query(e)) > 0 })
		if time.Now().After(deadline) {
			t.Fatalf("no data after 90s for %d dashboard expressions:\n%s", len(missing), strings.Join(missing, "\n"))
		}
	}
	stopLoad()
	sent := <-loadDone
	// An excerpt, for whoever reads the test's log.
	for line := range strings.Lines(httpGet(t, hc, "http://"+c.metrics+"/metrics", "")) {
		for _, p := range []string{`surge_gateway_requests_total{code_class="2xx"`, "surge_build_info{", `surge_nodeagent_replicas{phase="Ready"}`,
			`surge_nodeagent_replica_start_duration_seconds_sum{stage="total"}`, "surge_autoscaler_desired_replicas{", "surge_nodeagent_replica_memory_bytes{"} {
			if strings.HasPrefix(line, p) {
				t.Log(strings.TrimSpace(line))
			}
		}
	}
	t.Logf("Prometheus scraped %d targets; %d requests sent; all %d dashboard expressions answered", func() int { _, n := q.targets(); return n }(), sent, len(exprs))
	if t.Failed() {
		t.Logf("prometheus output:\n%s", promOut)
	}
}

// requireBinary returns the path of a program the test runs; without it
// the test is skipped, or fails under CI=true.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := "needs " + name + " (apt-get install prometheus; scripts/setup.sh bench installs it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// httpGet fetches url with hc (and a bearer token, when given), and
// fails the test on anything but 200.
func httpGet(t *testing.T, hc *http.Client, u, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", u, resp.Status, b)
	}
	return string(b)
}

// promQuerier asks a Prometheus server's HTTP API.
type promQuerier struct {
	t    *testing.T
	base string
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	var v float64
	str, _ := s.Value[1].(string)
	fmt.Sscan(str, &v)
	return v
}

// query runs an instant query and returns its vector; nil on any error
// (Prometheus not yet up, no data), which the callers poll through.
func (q promQuerier) query(expr string) []promSample {
	var out struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if !q.get("/api/v1/query?query="+url.QueryEscape(expr), &out) || out.Status != "success" {
		return nil
	}
	return out.Data.Result
}

// targets counts the active targets and those up.
func (q promQuerier) targets() (up, all int) {
	var out struct {
		Data struct {
			ActiveTargets []struct {
				Health string `json:"health"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if !q.get("/api/v1/targets?state=active", &out) {
		return 0, 0
	}
	for _, tg := range out.Data.ActiveTargets {
		if tg.Health == "up" {
			up++
		}
	}
	return up, len(out.Data.ActiveTargets)
}

func (q promQuerier) get(path string, out any) bool {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(q.base + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(out) == nil
}

// dashboardExprs returns every PromQL expression of a Grafana dashboard:
// its panels' targets, rows' panels included.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("%s: panel %q has a target without an expression", path, p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return exprs
}
