package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuffer collects a gateway's log for a test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines that hold every one of words.
func (l *logBuffer) lines(words ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// tlsFixture is a gateway with a default certificate and a directory of
// certificates, all from one test CA, and a function "hello" that echoes.
type tlsFixture struct {
	*testGateway
	ca   *testCA
	dir  string // the default pair is dir/default.crt and .key
	sni  string // the directory: TLSDir
	log  *logBuffer
	port string
}

func startTLSFixture(t *testing.T, edit func(cfg *Config, deps *Deps)) *tlsFixture {
	t.Helper()
	f := &tlsFixture{ca: newTestCA(t), dir: t.TempDir(), log: &logBuffer{}}
	f.sni = filepath.Join(f.dir, "sni")
	if err := os.Mkdir(f.sni, 0o700); err != nil {
		t.Fatal(err)
	}
	f.ca.write(t, filepath.Join(f.dir, "default"), leaf{cn: "default", names: []string{"default.example.test"}})
	f.ca.write(t, filepath.Join(f.sni, "a"), leaf{cn: "a", names: []string{"a.example.test"}})
	f.ca.write(t, filepath.Join(f.sni, "wild"), leaf{cn: "wildcard", names: []string{"*.b.example.test"}})
	f.ca.write(t, filepath.Join(f.sni, "ip"), leaf{cn: "loopback", names: []string{"127.0.0.1"}})
	f.ca.write(t, filepath.Join(f.sni, "hello"), leaf{cn: "hello", names: []string{"hello.surge.localhost"}})
	f.ca.write(t, filepath.Join(f.sni, "functions"), leaf{cn: "functions", names: []string{"*.surge.localhost"}})
	if err := os.WriteFile(filepath.Join(f.dir, "ca.pem"), f.ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(f.dir, "default.crt"), filepath.Join(f.dir, "default.key")
	cfg.TLSDir = f.sni
	deps := Deps{Log: f.log.logger()}
	if edit != nil {
		edit(&cfg, &deps)
	}
	f.testGateway = startGateway(t, cfg, deps)
	_, f.port, _ = net.SplitHostPort(f.tlsAddr)
	f.route("hello", "hello-00001", 0, 0, backend(t, echoHandler))
	// Serving: the certificates are loaded, and a test may run the
	// certificate loop's rounds itself.
	eventually(t, "the gateway serving HTTPS", func() bool {
		_, _, err := handshake(f.tlsAddr, &tls.Config{InsecureSkipVerify: true})
		return err == nil
	})
	return f
}

// cn is the common name of the certificate the gateway presents for sni
// (not verified: a name no certificate matches gets the default one).
func (f *tlsFixture) cn(t *testing.T, sni string) string {
	t.Helper()
	cn, _, err := handshake(f.tlsAddr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake for %q: %v", sni, err)
	}
	return cn
}

// httpsClient trusts the fixture's CA and dials every host at the
// gateway's HTTPS address; keepAlive false makes a handshake per request.
func (f *tlsFixture) httpsClient(keepAlive bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: f.ca.pool},
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, f.tlsAddr)
		},
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestTLSChoosesTheCertificateBySNI: a name gets the certificate that
// names it, else the wildcard that covers it (one label only), else the
// default; a client that sends no name gets the certificate of the
// address it dialed. Requests over TLS are proxied, and the replica is
// told that the client came over HTTPS.
func TestTLSChoosesTheCertificateBySNI(t *testing.T) {
	f := startTLSFixture(t, nil)
	for _, tc := range []struct{ sni, want string }{
		{"a.example.test", "a"},
		{"A.Example.TEST.", "a"},
		{"x.b.example.test", "wildcard"},
		{"x.y.b.example.test", "default"}, // * stands for one label
		{"b.example.test", "default"},
		{"default.example.test", "default"},
		{"nothing.test", "default"},
		{"", "loopback"}, // no SNI: the dialed address's
	} {
		if got := f.cn(t, tc.sni); got != tc.want {
			t.Errorf("SNI %q: certificate %q, want %q", tc.sni, got, tc.want)
		}
	}

	// Verified, with a request through to the replica: routed by path,
	// and by host.
	for _, url := range []string{"a.example.test:PORT/fn/hello/p?q=1", "x.b.example.test:PORT/fn/hello/p?q=1", "hello.surge.localhost:PORT/p?q=1"} {
		url = "https://" + strings.Replace(url, "PORT", f.port, 1)
		resp, err := f.httpsClient(true).Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e := decodeEcho(t, string(body))
		if resp.StatusCode != 200 || e.URI != "/p?q=1" || e.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("GET %s: %d, URI %q, X-Forwarded-Proto %q; want 200, /p?q=1, https", url, resp.StatusCode, e.URI, e.Header.Get("X-Forwarded-Proto"))
		}
	}
	// Plain HTTP goes on as before.
	if resp, body := f.do(t, "GET", "hello.surge.localhost", "/", nil, nil); resp.StatusCode != 200 || decodeEcho(t, body).Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("plain GET: %d %s", resp.StatusCode, body)
	}
}

// requireCurl returns curl's path; without curl the test is skipped, and
// under CI=true it fails.
func requireCurl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed (scripts/setup.sh bench installs it)")
		}
		t.Skip("curl is not installed")
	}
	return p
}

// TestTLSWithCurl: curl, which checks the certificate against the name
// itself, gets the named certificate and the wildcard, refuses the
// default one for a name it does not cover, and, asking for HTTP/2,
// speaks HTTP/1.1 (the gateway offers nothing else).
func TestTLSWithCurl(t *testing.T) {
	curl := requireCurl(t)
	f := startTLSFixture(t, nil)
	run := func(host string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args = append([]string{"-sS", "--cacert", filepath.Join(f.dir, "ca.pem"),
			"--resolve", host + ":" + f.port + ":127.0.0.1", "-w", "\n%{http_code} %{http_version}"}, args...)
		args = append(args, "https://"+host+":"+f.port+"/fn/hello/")
		out, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
		return string(out), err
	}
	for _, host := range []string{"a.example.test", "x.b.example.test"} {
		out, err := run(host)
		if err != nil || !strings.HasSuffix(out, "\n200 1.1") || !strings.Contains(out, `"X-Forwarded-Proto":["https"]`) {
			t.Errorf("curl %s: %v\n%s", host, err, out)
		}
	}
	if out, err := run("x.b.example.test", "--http2"); err != nil || !strings.HasSuffix(out, "\n200 1.1") {
		t.Errorf("curl --http2: %v\n%s; want HTTP/1.1", err, out)
	}
	out, err := run("x.y.b.example.test")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 60 {
		t.Errorf("curl for a name the wildcard does not cover: %v\n%s; want exit 60 (certificate does not match)", err, out)
	}
}

// TestTLSRefusesOldVersionsAndWeakSuites: TLS 1.0 and 1.1 are refused,
// and so is TLS 1.2 with only CBC suites; 1.2 with an AEAD suite and 1.3
// are served.
func TestTLSRefusesOldVersionsAndWeakSuites(t *testing.T) {
	f := startTLSFixture(t, nil)
	for _, tc := range []struct {
		name    string
		cfg     *tls.Config
		wantErr string
	}{
		{"TLS 1.0", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, "protocol version not supported"},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, "protocol version not supported"},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}, "handshake failure"},
		{"TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, ""},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, ""},
		// ALPN: HTTP/1.1 is chosen over h2, and a client that speaks h2
		// alone (gRPC) is told at once.
		{"h2 or HTTP/1.1", &tls.Config{NextProtos: []string{"h2", "http/1.1"}}, ""},
		{"h2 only", &tls.Config{NextProtos: []string{"h2"}}, "no application protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.Clone()
			cfg.RootCAs, cfg.ServerName = f.ca.pool, "a.example.test"
			_, st, err := handshake(f.tlsAddr, cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("handshake: %v, want an error with %q", err, tc.wantErr)
			case err == nil && st.Version == tls.VersionTLS12 && !slices.Contains(tlsSuites, st.CipherSuite):
				t.Errorf("TLS 1.2 suite %s, not one of the gateway's", tls.CipherSuiteName(st.CipherSuite))
			case err == nil && len(cfg.NextProtos) > 0 && st.NegotiatedProtocol != "http/1.1":
				t.Errorf("ALPN chose %q, want http/1.1", st.NegotiatedProtocol)
			}
		})
	}
}

// getOver sends one GET over c and reads the answer.
func getOver(t *testing.T, c *tls.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET /.surge/ready HTTP/1.1\r\nHost: a.example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /.surge/ready over TLS: %s", resp.Status)
	}
}

// TestTLSSessionResumption: a client that kept the gateway's session
// ticket resumes, over TLS 1.2 and 1.3, and skips the certificate.
func TestTLSSessionResumption(t *testing.T) {
	f := startTLSFixture(t, nil)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cfg := f.ca.clientConfig("a.example.test")
			cfg.MinVersion, cfg.MaxVersion = v, v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i, want := range []bool{false, true, true} {
				c, err := tls.Dial("tcp", f.tlsAddr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				// A request: TLS 1.3 sends its ticket after the handshake,
				// and the client takes it as it reads.
				getOver(t, c)
				if got := c.ConnectionState().DidResume; got != want {
					t.Errorf("connection %d: resumed %v, want %v", i, got, want)
				}
				c.Close()
			}
		})
	}
	if n := testutil.ToFloat64(f.certs.m.handshakes.WithLabelValues("true")); n != 4 {
		t.Errorf("surge_gateway_tls_handshakes_total{resumed=\"true\"} = %v, want 4", n)
	}
}

// TestTLSReloadWhileRequestsFlow: the certificate file is replaced while
// two clients send requests, one on a kept-alive connection and one with a
// handshake per request; the next handshakes after the reload get the new
// certificate, and no request fails.
func TestTLSReloadWhileRequestsFlow(t *testing.T) {
	f := startTLSFixture(t, nil)
	base := filepath.Join(f.sni, "hello")
	f.ca.write(t, base, leaf{cn: "v1", names: []string{"hello.surge.localhost"}})
	f.refresh(t)
	loaded := len(f.log.lines("certificate loaded", "hello.crt"))

	var ok, failed atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, keepAlive := range []bool{true, false} {
		c := f.httpsClient(keepAlive)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://hello.surge.localhost:" + f.port + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					lastErr.Store(err)
					continue
				}
				ok.Add(1)
				mu.Lock()
				seen[resp.TLS.PeerCertificates[0].Subject.CommonName]++
				mu.Unlock()
			}
		})
	}
	sawCN := func(cn string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[cn] > 10
		}
	}
	eventually(t, "requests with v1", sawCN("v1"))
	f.ca.write(t, base, leaf{cn: "v2", names: []string{"hello.surge.localhost"}})
	f.refresh(t)
	eventually(t, "requests with v2", sawCN("v2"))
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the reload; last: %v", n, n+ok.Load(), lastErr.Load())
	}
	if got := len(f.log.lines("certificate loaded", "hello.crt")); got != loaded+1 {
		t.Errorf("log has %d lines of hello.crt loaded after the reload, want %d (v2 once):\n%s", got, loaded+1, f.log)
	}
}

// refresh runs one round of the certificate loop, as its ticker does
// every TLSReloadInterval.
func (f *tlsFixture) refresh(t *testing.T) {
	t.Helper()
	f.certs.refresh(t.Context())
}

// TestTLSBadFileKeepsTheOldCertificate: a certificate replaced by one
// that does not load (not PEM, a key of another certificate, expired) is
// one clear error in the log, naming the file, however many times the
// loop looks at it; the certificate before it goes on serving, and the
// next good file replaces it.
func TestTLSBadFileKeepsTheOldCertificate(t *testing.T) {
	f := startTLSFixture(t, nil)
	base := filepath.Join(f.sni, "a")
	otherKey := func() []byte {
		_, k := f.ca.sign(t, leaf{cn: "other", names: []string{"a.example.test"}})
		return k
	}
	steps := []struct {
		name    string
		write   func()
		wantErr string
	}{
		{"not PEM", func() { writeAtomic(t, base+".crt", []byte("not a certificate\n")) }, "failed to find any PEM data"},
		{"another certificate's key", func() {
			f.ca.write(t, base, leaf{cn: "a2", names: []string{"a.example.test"}})
			writeAtomic(t, base+".key", otherKey())
		}, "private key does not match public key"},
		{"expired", func() {
			f.ca.write(t, base, leaf{cn: "a3", names: []string{"a.example.test"}, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
		}, "certificate expired at"},
		{"key missing", func() {
			f.ca.write(t, base, leaf{cn: "a4", names: []string{"a.example.test"}})
			if err := os.Remove(base + ".key"); err != nil {
				t.Fatal(err)
			}
		}, "no such file"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(f.log.lines("level=ERROR"))
			s.write()
			for range 3 {
				f.refresh(t)
			}
			errs := f.log.lines("level=ERROR")[before:]
			if len(errs) != 1 || !strings.Contains(errs[0], "a.crt") || !strings.Contains(errs[0], s.wantErr) || !strings.Contains(errs[0], "goes on serving") {
				t.Errorf("log after three rounds: %q; want one error naming a.crt, saying %q and that the old certificate goes on serving", errs, s.wantErr)
			}
			if got := f.cn(t, "a.example.test"); got != "a" {
				t.Errorf("certificate served for a.example.test: %q, want the old one, a", got)
			}
		})
	}
	f.ca.write(t, base, leaf{cn: "a5", names: []string{"a.example.test"}})
	f.refresh(t)
	if got := f.cn(t, "a.example.test"); got != "a5" {
		t.Errorf("after a good file: %q, want a5", got)
	}
	if n := testutil.ToFloat64(f.certs.m.errors); n != float64(len(steps)) {
		t.Errorf("surge_gateway_tls_certificate_errors_total = %v, want %d, one per bad version", n, len(steps))
	}
	a5 := f.certs.table.Load().byName["a.example.test"][0].Leaf.NotAfter
	if got := testutil.ToFloat64(f.certs.m.notAfter.WithLabelValues(base + ".crt")); got != float64(a5.Unix()) {
		t.Errorf("expiry of a.crt: %v, want a5's %v", got, a5.Unix())
	}
	// A pair whose files are removed stops serving its names.
	for _, ext := range []string{".crt", ".key"} {
		if err := os.Remove(base + ext); err != nil {
			t.Fatal(err)
		}
	}
	f.refresh(t)
	if got := f.cn(t, "a.example.test"); got != "default" {
		t.Errorf("after its files were removed: %q, want the default", got)
	}
}

// TestTLSExpiredCertificateRefusedAtLoad: an expired (or not yet valid)
// default certificate keeps the gateway from starting, with an error
// naming the file; an expired certificate of the directory is left out,
// with an error in the log, and the others serve.
func TestTLSExpiredCertificateRefusedAtLoad(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		l       leaf
		wantErr string
	}{
		{"expired", leaf{cn: "old", names: []string{"old.test"}, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Minute)}, "certificate expired at"},
		{"not yet valid", leaf{cn: "new", names: []string{"new.test"}, notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(48 * time.Hour)}, "certificate not valid before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(dir, tc.l.cn)
			ca.write(t, base, tc.l)
			cfg := testConfig()
			cfg.TLSCertFile, cfg.TLSKeyFile = base+".crt", base+".key"
			tln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g, err := New(cfg, Deps{TLSListener: tln, Listener: closedListener(t)})
			if err != nil {
				t.Fatal(err)
			}
			err = g.Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), base+".crt") {
				t.Fatalf("Run: %v; want an error naming %s.crt and saying %q", err, base, tc.wantErr)
			}
			if c, err := net.Dial("tcp", tln.Addr().String()); err == nil {
				c.Close()
				t.Errorf("the HTTPS listener still accepts after Run failed")
			}
		})
	}

	f := startTLSFixture(t, func(cfg *Config, deps *Deps) {
		ca := newTestCA(t)
		base := filepath.Join(cfg.TLSDir, "expired")
		ca.write(t, base, leaf{cn: "expired", names: []string{"expired.test"}, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Minute)})
	})
	if got := f.cn(t, "expired.test"); got != "default" {
		t.Errorf("an expired certificate of the directory served: %q, want the default", got)
	}
	if got := f.cn(t, "a.example.test"); got != "a" {
		t.Errorf("the directory's good certificate: %q, want a", got)
	}
	if got := f.log.lines("level=ERROR", "expired.crt", "certificate expired at", "not served"); len(got) != 1 {
		t.Errorf("log:\n%s\nwant one error saying expired.crt expired and is not served", f.log)
	}
}

// closedListener is a listener for a gateway whose Run fails before it
// serves: it is closed when the test ends.
func closedListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestWebSocketOverTLS: a wss:// connection is tunnelled to the replica
// like a ws:// one, with messages larger than every buffer, and the
// replica is told the client came over HTTPS.
func TestWebSocketOverTLS(t *testing.T) {
	f := startTLSFixture(t, nil)
	b := startWSBackend(t)
	f.route("ws", "ws-00001", 0, 0, b.addr)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: f.ca.clientConfig("x.b.example.test")}
	c, resp, err := d.Dial("wss://"+f.tlsAddr+"/chat", http.Header{"Host": {"ws.surge.localhost"}})
	if err != nil {
		t.Fatalf("dial wss: %v (%v)", err, resp)
	}
	defer c.Close()
	if h := <-b.headers; h.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("replica saw X-Forwarded-Proto %q, want https", h.Get("X-Forwarded-Proto"))
	}
	for _, m := range []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, bytes.Repeat([]byte{0, 1, 2, 0xff}, 64<<10)},
		{websocket.TextMessage, []byte("again")},
	} {
		if err := c.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Errorf("echo of %d bytes: type %d, %d bytes", len(m.data), typ, len(got))
		}
	}
	c.Close()
	select {
	case <-b.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the replica's end of the tunnel stayed open after the client closed")
	}
}

// TestStreamingOverTLS: a response the replica writes in pieces reaches
// the client over TLS as it is written.
func TestStreamingOverTLS(t *testing.T) {
	f := startTLSFixture(t, nil)
	release := make(chan struct{})
	f.route("sse", "sse-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: two\n\n")
	}))
	resp, err := f.httpsClient(true).Get("https://sse.surge.localhost:" + f.port + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q, %v", line, err) // it would hang here if the gateway buffered
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("\ndata: two\n\n", string(rest)); diff != "" {
		t.Errorf("rest of stream (-want +got):\n%s", diff)
	}
}

// TestTLSDrainClosesIdleConnections: at shutdown the gateway closes its
// idle TLS connections from the drain's goroutine, which writes TLS's
// close_notify while the connection's own goroutine waits to read: the
// client sees the connection end cleanly, and Run returns.
func TestTLSDrainClosesIdleConnections(t *testing.T) {
	f := startTLSFixture(t, nil)
	c, err := tls.Dial("tcp", f.tlsAddr, f.ca.clientConfig("a.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	getOver(t, c)
	getOver(t, c) // kept alive
	f.cancel()
	if err := f.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read after the drain: %d, %v; want io.EOF (close_notify)", n, err)
	}
}

// TestParkedTLSConnectionKeepsItsSession: an idle TLS connection is
// parked like a plain one — fasthttp lets go of it, no close_notify is
// sent — and when the client sends its next request the same TLS session
// goes on: the request is answered on the same connection, with no new
// handshake.
func TestParkedTLSConnectionKeepsItsSession(t *testing.T) {
	f := startTLSFixture(t, func(cfg *Config, _ *Deps) { cfg.ParkIdleAfter = 20 * time.Millisecond })
	// fasthttp counts each listener it serves as one open connection, and
	// takes one off: with two, the count is one with no connection open
	// (once the fixture's own probe has gone).
	const idle = 1
	eventually(t, "no connection open", func() bool { return f.srv.GetOpenConnectionsCount() == idle })
	c, err := tls.Dial("tcp", f.tlsAddr, f.ca.clientConfig("a.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 3 {
		getOver(t, c)
		eventually(t, "the idle TLS connection to be parked", func() bool { return f.parkedCount() == 1 })
		if n := f.srv.GetOpenConnectionsCount() - idle; n != 0 {
			t.Errorf("round %d: fasthttp serves %d connections while the only one is parked", round, n)
		}
	}
	getOver(t, c)
	if p, w := f.park.parks.Load(), f.park.wakes.Load(); p != 3 || w != 3 {
		t.Errorf("%d parks and %d wakes, want 3 and 3", p, w)
	}
	// Pipelined, right after a wake: both answered, in order.
	eventually(t, "the idle TLS connection to be parked", func() bool { return f.parkedCount() == 1 })
	req := "GET /.surge/ready HTTP/1.1\r\nHost: a.example.test\r\n\r\n"
	if _, err := io.WriteString(c, req+req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined answer %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("pipelined answer %d: %s", i, resp.Status)
		}
	}
	if st := c.ConnectionState(); st.DidResume || !st.HandshakeComplete {
		t.Errorf("connection state after the wakes: %+v; want the first handshake's session", st)
	}
}

// TestTLSConnectionsOverTheCapPerAddressAreClosed: a client address over
// MaxConnsPerIP is refused on the HTTPS listener by a close — no plain
// HTTP answer written into what the client reads as TLS.
func TestTLSConnectionsOverTheCapPerAddressAreClosed(t *testing.T) {
	f := startTLSFixture(t, func(cfg *Config, _ *Deps) { cfg.MaxConnsPerIP = 1 })
	// The fixture's probe has gone once its connection is uncounted.
	var first *tls.Conn
	eventually(t, "a first connection admitted", func() bool {
		c, err := tls.Dial("tcp", f.tlsAddr, f.ca.clientConfig("a.example.test"))
		if err != nil {
			return false
		}
		first = c
		return true
	})
	defer first.Close()
	getOver(t, first)
	_, _, err := handshake(f.tlsAddr, f.ca.clientConfig("a.example.test"))
	if err == nil || strings.Contains(err.Error(), "first record does not look like a TLS handshake") {
		t.Errorf("second connection from the address: %v; want it closed, with nothing written", err)
	}
}
