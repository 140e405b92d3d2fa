package benchmarks

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// GatewayTLS runs B1 over TLS (B1-TLS): closed-loop requests per second
// through Surge's gateway and nginx, each serving HTTPS on one core with
// the same ECDSA P-256 certificate and kept-alive connections (wrk, over
// TLS 1.3 with AES-128-GCM on both), and httputil.ReverseProxy beside
// them; then B1-H2, the figures of the HTTP/2 decision (docs/design.md,
// "HTTP/2"): the same load by h2load, one request in flight per
// connection, over HTTP/1.1 and over h2, through nginx (which speaks
// both), Surge (HTTP/1.1 only) and Go's net/http with httputil (h2, the
// server Surge would add for it). B1-H2 is skipped when h2load
// (nghttp2-client) is missing.
func GatewayTLS(ctx context.Context) ([]Row, error) {
	if err := requireTools(); err != nil {
		return nil, err
	}
	if runtime.NumCPU() < 2 {
		return nil, errNoCores
	}
	dir, err := os.MkdirTemp("", "surge-bench-tls-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // kills every process started under ctx
	var procs []*process
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	certFile, keyFile, err := writeBenchCert(dir)
	if err != nil {
		return nil, err
	}
	gwbench, err := buildGwbench(ctx, dir)
	if err != nil {
		return nil, err
	}
	start := func(name, cpu string, wait func(addr string, p *process) error, argv func(addr string) ([]string, error)) (*process, string, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		args, err := argv(addr)
		if err != nil {
			return nil, "", err
		}
		p, err := startProcess(ctx, name, cpu, args...)
		if err != nil {
			return nil, "", err
		}
		procs = append(procs, p)
		return p, addr, wait(addr, p)
	}
	waitPlain := func(addr string, p *process) error { return p.waitHTTP(ctx, addr, HelloHost) }
	waitTLS := func(addr string, p *process) error { return p.waitHTTPS(ctx, addr, HelloHost) }
	_, backend, err := start("backend", loadCPU, waitPlain, func(addr string) ([]string, error) {
		return []string{gwbench, "backend", "-addr", addr}, nil
	})
	if err != nil {
		return nil, err
	}
	type subject struct {
		name string
		p    *process
		addr string
	}
	var subjects []subject
	for _, pr := range []struct {
		name string
		argv func(addr string) ([]string, error)
	}{
		{surgeName, func(addr string) ([]string, error) {
			return gwbenchArgs(gwbench, "surge", proxyConf{Listen: addr, Backend: backend, CertFile: certFile, KeyFile: keyFile}), nil
		}},
		{"nginx", func(addr string) ([]string, error) {
			c := newProxyConf(filepath.Join(dir, "nginx"), addr, backend, 4096, 0)
			c.CertFile, c.KeyFile, c.HTTP2 = certFile, keyFile, true
			if err := os.MkdirAll(c.Dir, 0o755); err != nil {
				return nil, err
			}
			conf, err := writeConf(nginxConf, "nginx.conf", c)
			if err != nil {
				return nil, err
			}
			return []string{"nginx", "-e", filepath.Join(c.Dir, "error.log"), "-p", c.Dir, "-c", conf}, nil
		}},
		{"httputil.ReverseProxy", func(addr string) ([]string, error) {
			return gwbenchArgs(gwbench, "httputil", proxyConf{Listen: addr, Backend: backend, CertFile: certFile, KeyFile: keyFile}), nil
		}},
	} {
		p, addr, err := start(pr.name, proxyCPU, waitTLS, pr.argv)
		if err != nil {
			return nil, fmt.Errorf("%s over TLS: %w", pr.name, err)
		}
		subjects = append(subjects, subject{pr.name, p, addr})
	}

	unpin, err := pinProcess(loadCPU)
	if err != nil {
		return nil, err
	}
	defer unpin()

	// B1-TLS: round-robin, the best round of each counts, as in B1.
	fmt.Fprintf(os.Stderr, "  B1-TLS")
	best := make([]closedLoopRun, len(subjects))
	for round := range b1Rounds {
		for i, s := range subjects {
			r, err := closedLoopURL(ctx, s.p, "https://"+s.addr+"/", round == 0)
			if err != nil {
				return nil, fmt.Errorf("B1-TLS %s: %w", s.name, err)
			}
			if round == 0 || r.res.RPS > best[i].res.RPS {
				best[i] = r
			}
		}
	}
	rps, perCPU := map[string]float64{}, map[string]float64{}
	var rows []Row
	for i, s := range subjects {
		r := best[i]
		rps[s.name], perCPU[s.name] = r.res.RPS, r.res.RPS/max(r.cpu, 0.01)
		rows = append(rows, Row{Bench: "B1-TLS", Subject: s.name + " over TLS", Latency: &Latency{N: r.res.Requests, P50: r.res.P50, P99: r.res.P99},
			Value: r.res.RPS, Unit: "rps", Baseline: s.name == surgeName, Note: fmt.Sprintf("best of %d; %s", b1Rounds, r.note)})
	}
	for i := range rows {
		switch subjects[i].name {
		case "nginx":
			rows[i].Note = joinNote(rows[i].Note, ratioGoal("surge/nginx over TLS", rps[surgeName]/rps["nginx"], perCPU[surgeName]/perCPU["nginx"], goalVsNginx))
		case "httputil.ReverseProxy":
			rows[i].Note = joinNote(rows[i].Note, fmt.Sprintf("surge/httputil over TLS %sx", floor2(rps[surgeName]/rps["httputil.ReverseProxy"])))
		}
	}

	// B1-H2: one generator for both protocols.
	if _, err := exec.LookPath("h2load"); err != nil {
		fmt.Fprintln(os.Stderr)
		return append(rows, Row{Bench: "B1-H2", Subject: "HTTP/2 figures", Note: "skipped: h2load is not installed (apt-get install nghttp2-client)"}), nil
	}
	fmt.Fprintf(os.Stderr, ", B1-H2\n")
	for _, run := range []struct {
		subject string
		s       subject
		h2      bool
	}{
		{"nginx, HTTP/1.1 over TLS", subjects[1], false},
		{"nginx, h2", subjects[1], true},
		{"surge gateway, HTTP/1.1 over TLS", subjects[0], false},
		{"httputil.ReverseProxy, h2 (net/http)", subjects[2], true},
	} {
		var bestRun h2loadRun
		for round := range b1Rounds {
			r, err := h2loadLoop(ctx, run.s.p, run.s.addr, run.h2, round == 0)
			if err != nil {
				return nil, fmt.Errorf("B1-H2 %s: %w", run.subject, err)
			}
			if round == 0 || r.rps > bestRun.rps {
				bestRun = r
			}
		}
		rows = append(rows, Row{Bench: "B1-H2", Subject: run.subject, Value: bestRun.rps, Unit: "rps", Baseline: run.subject == "nginx, h2",
			Note: fmt.Sprintf("h2load -c%d -m1, best of %d; process CPU %.0f%% (%.1fk rps per CPU-second); %s, %s",
				wrkConns, b1Rounds, 100*bestRun.cpu, bestRun.rps/max(bestRun.cpu, 0.01)/1000, bestRun.proto, bestRun.tls)})
	}
	return rows, nil
}

// waitHTTPS is waitHTTP over TLS.
func (p *process) waitHTTPS(ctx context.Context, addr, host string) error {
	return p.waitAnswer(ctx, addr, host, probeTLS)
}

// probeTLS sends one GET over TLS (the benchmark's own certificate, not
// verified) and checks for a 200.
func probeTLS(addr, host string) error {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		return fmt.Errorf("answered %q", strings.TrimSpace(line))
	}
	return nil
}

// writeBenchCert writes a self-signed ECDSA P-256 certificate for
// HelloHost and loopback, and its key, into dir: the one every subject
// serves.
func writeBenchCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: HelloHost},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{HelloHost},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "bench.crt"), filepath.Join(dir, "bench.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// h2loadRun is one h2load run of B1-H2.
type h2loadRun struct {
	rps   float64
	cpu   float64 // the share of one core the subject's processes used
	proto string  // the protocol h2load negotiated
	tls   string  // the TLS version and cipher it negotiated
}

// h2loadLoop runs h2load against addr over TLS for b1Duration (after a
// warm-up, if warm), with wrkConns connections and one request in flight
// on each, over h2 or HTTP/1.1, on the load core, to /fn/hello/ (Surge
// routes it to hello; the others ignore the path).
func h2loadLoop(ctx context.Context, p *process, addr string, h2, warm bool) (h2loadRun, error) {
	args := func(d time.Duration) []string {
		a := []string{"taskset", "-c", loadCPU, "h2load", "-t1", "-c" + strconv.Itoa(wrkConns), "-m1",
			"-D", strconv.Itoa(int(d / time.Second))}
		if !h2 {
			a = append(a, "--h1")
		}
		// Routed by path: h2load's -H host would be a second Host header
		// over HTTP/1.1, which the gateway refuses.
		return append(a, "https://"+addr+"/fn/hello/")
	}
	if warm {
		if _, err := runH2load(ctx, args(wrkWarmup)); err != nil {
			return h2loadRun{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	t0, err := treeCPUTicks(p.pid())
	if err != nil {
		return h2loadRun{}, err
	}
	began := time.Now()
	r, err := runH2load(ctx, args(b1Duration))
	if err != nil {
		return h2loadRun{}, err
	}
	elapsed := time.Since(began)
	t1, err := treeCPUTicks(p.pid())
	if err != nil {
		return h2loadRun{}, err
	}
	r.cpu = float64(t1-t0) / clockTicks / elapsed.Seconds()
	return r, nil
}

// runH2load runs h2load and reads its report: requests per second, the
// protocol negotiated, and that no request failed.
func runH2load(ctx context.Context, args []string) (h2loadRun, error) {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return h2loadRun{}, fmt.Errorf("run %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return parseH2load(string(out))
}

// parseH2load parses h2load 1.x's report.
func parseH2load(out string) (h2loadRun, error) {
	var r h2loadRun
	var done, failed int64 = -1, -1
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "finished" && f[1] == "in":
			// "finished in 2.00s, 51234.50 req/s, 6.12MB/s"
			v, err := strconv.ParseFloat(f[3], 64)
			if err != nil {
				return r, fmt.Errorf("h2load req/s %q: %w", f[3], err)
			}
			r.rps = v
		case len(f) >= 10 && f[0] == "requests:":
			// "requests: 102469 total, 102533 started, 102469 done, 102469 succeeded, 0 failed, 0 errored, 0 timeout"
			done, _ = strconv.ParseInt(f[5], 10, 64)
			failed, _ = strconv.ParseInt(f[9], 10, 64)
		case strings.HasPrefix(line, "Application protocol:") && len(f) == 3:
			r.proto = f[2]
		case strings.HasPrefix(line, "TLS Protocol:") && len(f) == 3:
			r.tls = strings.TrimSpace(f[2] + " " + r.tls)
		case strings.HasPrefix(line, "Cipher:") && len(f) == 2:
			r.tls = strings.TrimSpace(r.tls + " " + f[1])
		}
	}
	switch {
	case r.rps == 0 || done < 0:
		return r, errors.New("h2load output has no req/s or request counts")
	case failed > 0 || done == 0:
		return r, fmt.Errorf("h2load: %d of %d requests failed", failed, done)
	}
	return r, nil
}
