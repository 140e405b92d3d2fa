package benchmarks

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		file string
		want WrkResult
	}{
		{"wrk-ok.txt", WrkResult{Requests: 16233, Elapsed: 1130 * time.Millisecond, RPS: 14336.57,
			P50: 1430 * time.Microsecond, P99: 246540 * time.Microsecond}},
		// wrk's report with a socket error line (added by hand to a real
		// report: loopback runs seldom have one).
		{"wrk-socket-errors.txt", WrkResult{Requests: 16233, Elapsed: 1130 * time.Millisecond, RPS: 14336.57,
			P50: 1430 * time.Microsecond, P99: 246540 * time.Microsecond, SocketErrors: 16}},
		{"wrk-non2xx.txt", WrkResult{Requests: 29973, Elapsed: 1050 * time.Millisecond, RPS: 28681.80,
			P50: 66 * time.Microsecond, P99: 59030 * time.Microsecond, Non2xx: 29973}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(string(b))
			if err != nil {
				t.Fatalf("parseWrk: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no report", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join("testdata", "wrk-refused.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseWrk(string(b)); err == nil {
			t.Error("parseWrk accepted output without a report")
		}
	})
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"812.00us", 812 * time.Microsecond},
		{"0.91ms", 910 * time.Microsecond},
		{"5.00s", 5 * time.Second},
		{"1.50m", 90 * time.Second},
	}
	for _, tt := range tests {
		got, err := parseWrkDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "12", "1.2xs", "ms"} {
		if _, err := parseWrkDuration(bad); err == nil {
			t.Errorf("parseWrkDuration(%q) accepted", bad)
		}
	}
}

func TestWrkArgs(t *testing.T) {
	got := strings.Join(wrkArgs("0", 1, 64, 5*time.Second, "hello.surge.localhost", "http://127.0.0.1:1/"), " ")
	want := "taskset -c 0 wrk -t1 -c64 -d5s --timeout 5s --latency -H Host: hello.surge.localhost http://127.0.0.1:1/"
	if got != want {
		t.Errorf("wrkArgs = %q, want %q", got, want)
	}
}

func TestProxyConfigs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		hard       uint64
		wantCap    bool
		wantNoFile int
	}{
		{"room", 1 << 20, false, 23000},
		{"unknown limit", 0, false, 23000},
		{"capped", 20000, true, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newProxyConf(dir, "127.0.0.1:18080", "127.0.0.1:19090", 11000, tt.hard)
			if c.Capped != tt.wantCap || c.NoFile != tt.wantNoFile {
				t.Fatalf("newProxyConf: capped %v nofile %d, want %v %d", c.Capped, c.NoFile, tt.wantCap, tt.wantNoFile)
			}
			nginx, err := renderConf(nginxConf, c)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"worker_processes 1;", "daemon off;", "access_log off;", "keepalive 64;",
				"server 127.0.0.1:19090;", "listen 127.0.0.1:18080", "proxy_http_version 1.1;",
				`proxy_set_header Connection "";`, "worker_connections 11000;",
				"worker_rlimit_nofile " + strconv.Itoa(tt.wantNoFile) + ";", "pid " + dir + "/nginx.pid;",
			} {
				if !strings.Contains(nginx, want) {
					t.Errorf("nginx config lacks %q:\n%s", want, nginx)
				}
			}
			haproxy, err := renderConf(haproxyConf, c)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"nbthread 1", "mode http", "http-reuse always", "option http-keep-alive",
				"bind 127.0.0.1:18080", "server backend 127.0.0.1:19090", "maxconn 11000",
			} {
				if !strings.Contains(haproxy, want) {
					t.Errorf("haproxy config lacks %q:\n%s", want, haproxy)
				}
			}
			if got := strings.Contains(haproxy, "no strict-limits") && strings.Contains(haproxy, "ulimit-n 20000"); got != tt.wantCap {
				t.Errorf("haproxy config caps its file limit: %v, want %v:\n%s", got, tt.wantCap, haproxy)
			}
		})
	}
}

// TestProxyConfigsAreValid has nginx and HAProxy check the generated
// configurations, without starting them.
func TestProxyConfigsAreValid(t *testing.T) {
	c := newProxyConf(t.TempDir(), "127.0.0.1:18080", "127.0.0.1:19090", 11000, 0)
	// B1-TLS's nginx: HTTPS and h2 on the same listener.
	ct := c
	ct.Dir = t.TempDir()
	var err error
	if ct.CertFile, ct.KeyFile, err = writeBenchCert(ct.Dir); err != nil {
		t.Fatal(err)
	}
	ct.HTTP2 = true
	tests := []struct {
		tool string
		conf func() (string, error)
		args func(path string) []string
	}{
		{"nginx", func() (string, error) { return writeConf(nginxConf, "nginx.conf", c) },
			func(p string) []string {
				return []string{"-t", "-q", "-e", filepath.Join(c.Dir, "error.log"), "-p", c.Dir, "-c", p}
			}},
		{"nginx", func() (string, error) { return writeConf(nginxConf, "nginx.conf", ct) },
			func(p string) []string {
				return []string{"-t", "-q", "-e", filepath.Join(ct.Dir, "error.log"), "-p", ct.Dir, "-c", p}
			}},
		{"haproxy", func() (string, error) { return writeConf(haproxyConf, "haproxy.cfg", c) },
			func(p string) []string { return []string{"-c", "-q", "-f", p} }},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			if _, err := exec.LookPath(tt.tool); err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%s is not installed", tt.tool)
				}
				t.Skipf("%s is not installed", tt.tool)
			}
			path, err := tt.conf()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, tt.tool, tt.args(path)...).CombinedOutput(); err != nil {
				t.Errorf("%s rejects the generated config: %v\n%s", tt.tool, err, out)
			}
		})
	}
}

func TestParseAnswer(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	closing := "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
	noBody := "HTTP/1.1 204 No Content\r\n\r\n"
	tests := []struct {
		name, in   string
		status     int
		size       int
		closeAfter bool
		ok         bool
	}{
		{"content-length", ok, 200, len(ok), false, true},
		{"partial body", ok[:len(ok)-1], 0, 0, false, false},
		{"partial header", ok[:20], 0, 0, false, false},
		{"chunked", chunked, 200, len(chunked), false, true},
		{"chunked partial", chunked[:len(chunked)-2], 0, 0, false, false},
		{"close", closing, 503, len(closing), true, true},
		{"no body", noBody, 204, len(noBody), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, size, closeAfter, ok := parseAnswer([]byte(tt.in))
			if status != tt.status || size != tt.size || closeAfter != tt.closeAfter || ok != tt.ok {
				t.Errorf("parseAnswer = %d %d %v %v, want %d %d %v %v", status, size, closeAfter, ok, tt.status, tt.size, tt.closeAfter, tt.ok)
			}
		})
	}
}

func TestProcParsers(t *testing.T) {
	stat := []byte("4242 (nginx: worker) process) S 1 4242 4242 0 -1 4194624 100 0 0 0 1234 567 0 0 20 0 1 0 99 1000 10 18446744073709551615\n")
	if got, err := parseStatTicks(stat); err != nil || got != 1801 {
		t.Errorf("parseStatTicks = %d, %v; want 1801", got, err)
	}
	status := []byte("Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n")
	if got, err := parseStatusKB(status, "VmRSS:"); err != nil || got != 5120 {
		t.Errorf("parseStatusKB = %d, %v; want 5120", got, err)
	}
	procStat := []byte("cpu  100 5 50 1000 10 1 2 3 0 0\ncpu0 60 5 30 400 10 1 2 3 0 0\ncpu1 40 0 20 600 0 0 0 0 0 0\nintr 1\n")
	cpus, err := parseProcStat(procStat)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]cpuTicks{"cpu0": {busy: 101, total: 511}, "cpu1": {busy: 60, total: 660}}, cpus, cmp.AllowUnexported(cpuTicks{})); diff != "" {
		t.Errorf("parseProcStat (-want +got):\n%s", diff)
	}
	if got, err := parseTaskTicks(procStat); err != nil || got != 155 {
		t.Errorf("parseTaskTicks = %d, %v; want 155", got, err)
	}
	later := map[string]cpuTicks{"cpu0": {busy: 151, total: 611}}
	if got := busyPercent(cpus, later, "cpu0"); got != 50 {
		t.Errorf("busyPercent = %v, want 50", got)
	}
}

func TestPrintComparesValuesAndDeltas(t *testing.T) {
	ms := time.Millisecond
	ref := &Row{Samples: []time.Duration{1 * ms, 2 * ms}}
	rows := []Row{
		{Bench: "B1", Subject: "surge", Latency: &Latency{N: 10, P50: 2 * ms, P99: 4 * ms}, Value: 40000, Unit: "rps", Baseline: true},
		{Bench: "B1", Subject: "nginx", Latency: &Latency{N: 10, P50: 1 * ms, P99: 2 * ms}, Value: 60000, Unit: "rps", Note: "goal"},
		{Bench: "B2", Subject: "surge @50%", Samples: []time.Duration{3 * ms, 5 * ms}, Ref: ref, Delta: true},
		{Bench: "B7", Subject: "etcd", Samples: []time.Duration{ms}, Baseline: true},
		{Bench: "B7", Subject: "api", Samples: []time.Duration{3 * ms}},
		{Bench: "B8", Subject: "a allocs", Value: 78, Unit: "allocs", Baseline: true},
		{Bench: "B8", Subject: "b allocs", Value: 0, Unit: "allocs"},
		{Bench: "B8", Subject: "a mem", Value: 2, Unit: "MiB", Baseline: true},
		{Bench: "B8", Subject: "b mem", Value: 5, Unit: "MiB"},
	}
	var b bytes.Buffer
	if err := Print(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"BENCH", "SUBJECT", "N", "P50", "P99", "P50 VS BASE", "P99 VS BASE", "VALUE", "VALUE VS BASE", "NOTE"},
		{"B1", "surge (baseline)", "10", "2ms", "4ms", "-", "-", "40000 rps", "-", ""},
		{"B1", "nginx", "10", "1ms", "2ms", "0.50x", "0.50x", "60000 rps", "1.50x", "goal"},
		{"B2", "surge @50%", "2", "3ms", "5ms", "+2ms", "+3ms", "-", "-", ""},
		{"B7", "etcd (baseline)", "1", "1ms", "1ms", "-", "-", "-", "-", ""},
		{"B7", "api", "1", "3ms", "3ms", "3.00x", "3.00x", "-", "-", ""},
		{"B8", "a allocs (baseline)", "-", "-", "-", "-", "-", "78 allocs", "-", ""},
		{"B8", "b allocs", "-", "-", "-", "-", "-", "0 allocs", "0.00x", ""},
		{"B8", "a mem (baseline)", "-", "-", "-", "-", "-", "2 MiB", "-", ""},
		{"B8", "b mem", "-", "-", "-", "-", "-", "5 MiB", "2.50x", ""},
	}
	var got [][]string
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		var cells []string
		for _, c := range strings.Split(line, "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		if len(cells) < len(want[0]) {
			cells = append(cells, "") // an empty note
		}
		got = append(got, cells)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Print (-want +got):\n%s\n%s", diff, b.String())
	}
}

// TestOpenLoopKeepsItsSchedule runs the generator briefly against a
// loopback server: it sends what the schedule says and measures each.
func TestOpenLoopKeepsItsSchedule(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := HelloBackend()
	go srv.Serve(ln)
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := OpenLoop(ctx, OpenLoopConfig{Addr: ln.Addr().String(), Host: HelloHost, Rate: 2000, Conns: 4,
		Warmup: 50 * time.Millisecond, Duration: 250 * time.Millisecond, CPU: -1})
	if err != nil {
		t.Fatalf("OpenLoop: %v", err)
	}
	if n := len(res.Samples); n != 500 {
		t.Errorf("%d requests recorded, want 2000/s × 250ms = 500", n)
	}
	if res.Errors != 0 {
		t.Errorf("%d errors", res.Errors)
	}
	for _, s := range res.Samples {
		if s <= 0 || s > 10*time.Second {
			t.Fatalf("latency %v out of range", s)
		}
	}
}

func TestRatioGoalNeverRoundsUpToTheGoal(t *testing.T) {
	tests := []struct {
		got, perCPU, limit float64
		want               string
	}{
		{2.998, 3.05, 3, "goal surge/x >= 3.00x: 2.99x MISSED (per CPU-second 3.05x)"},
		{3, 2.5, 3, "goal surge/x >= 3.00x: 3.00x met (per CPU-second 2.50x)"},
		{0.29, 0.79, 1, "goal surge/x >= 1.00x: 0.29x MISSED (per CPU-second 0.79x)"},
	}
	for _, tt := range tests {
		if got := ratioGoal("surge/x", tt.got, tt.perCPU, tt.limit); got != tt.want {
			t.Errorf("ratioGoal(%v) = %q, want %q", tt.got, got, tt.want)
		}
	}
}
