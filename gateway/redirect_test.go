package gateway

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
)

// noFollow is an HTTP client that returns redirects instead of following
// them.
var noFollow = &http.Client{
	Transport:     httpClient.Transport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// plain sends a request to the gateway's plain HTTP port without following
// a redirect, and returns the status and Location.
func (f *tlsFixture) plain(t *testing.T, method, host, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+f.addr+path, strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestHTTPSRedirectForTheGateway: with HTTPSRedirect every plain request
// but the health check's is sent to the same URL over HTTPS, POSTs too
// (308 keeps the method and body); a client that follows it reaches the
// function over TLS; a proxy the gateway trusts that says the client came
// over HTTPS is not redirected.
func TestHTTPSRedirectForTheGateway(t *testing.T) {
	f := startTLSFixture(t, func(cfg *Config, _ *Deps) {
		cfg.HTTPSRedirect = true
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	want := "https://hello.surge.localhost:" + f.port + "/p/q?x=1&y=%20"
	for _, method := range []string{"GET", "HEAD", "POST"} {
		if code, loc := f.plain(t, method, "hello.surge.localhost:8080", "/p/q?x=1&y=%20", nil); code != 308 || loc != want {
			t.Errorf("%s: %d to %q, want 308 to %q", method, code, loc, want)
		}
	}
	if code, loc := f.plain(t, "GET", "nothing.example.test", "/fn/hello/", nil); code != 308 || loc != "https://nothing.example.test:"+f.port+"/fn/hello/" {
		t.Errorf("path route: %d to %q", code, loc)
	}
	if code, _ := f.plain(t, "GET", "x", "/.surge/ready", nil); code != 200 {
		t.Errorf("health check: %d, want 200 (never redirected)", code)
	}
	if code, _ := f.plain(t, "GET", "hello.surge.localhost", "/", map[string]string{"X-Forwarded-Proto": "https"}); code != 200 {
		t.Errorf("behind a trusted proxy that terminated TLS: %d, want 200", code)
	}
	for _, host := range []string{"a@b.test", "a b", "[::1"} {
		if code, loc := f.plain(t, "GET", host, "/", nil); code != 400 {
			t.Errorf("Host %q: %d to %q, want 400", host, code, loc)
		}
	}

	// Followed, by a client that trusts the CA.
	req, _ := http.NewRequest("GET", "http://"+f.addr+"/fn/hello/p", nil)
	req.Host = "a.example.test"
	resp, err := (&http.Client{Transport: redirectTransport{f.httpsClient(true).Transport}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := decodeEcho(t, string(body)); resp.StatusCode != 200 || resp.TLS == nil || e.Header.Get("X-Forwarded-Proto") != "https" || e.URI != "/p" {
		t.Errorf("after the redirect: %d, TLS %v, %+v", resp.StatusCode, resp.TLS != nil, e)
	}
}

// redirectTransport sends plain requests where their URL says, and HTTPS
// ones through t (to the gateway's HTTPS address).
type redirectTransport struct{ t http.RoundTripper }

func (r redirectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		return httpClient.Transport.RoundTrip(req)
	}
	return r.t.RoundTrip(req)
}

// TestHTTPSRedirectPort: redirects name HTTPSRedirectPort, and no port
// for 443.
func TestHTTPSRedirectPort(t *testing.T) {
	for _, tc := range []struct {
		port int
		want string
	}{
		{443, "https://hello.surge.localhost/"},
		{9443, "https://hello.surge.localhost:9443/"},
	} {
		f := startTLSFixture(t, func(cfg *Config, _ *Deps) {
			cfg.HTTPSRedirect, cfg.HTTPSRedirectPort = true, tc.port
		})
		if code, loc := f.plain(t, "GET", "hello.surge.localhost", "/", nil); code != 308 || loc != tc.want {
			t.Errorf("port %d: %d to %q, want 308 to %q", tc.port, code, loc, tc.want)
		}
	}
}

// TestHTTPSRedirectForOneFunction: a function with spec.httpsRedirect is
// redirected, by host and by path; the others are not; over TLS it is
// served.
func TestHTTPSRedirectForOneFunction(t *testing.T) {
	f := startTLSFixture(t, nil)
	addr := backend(t, echoHandler)
	f.Routes().Update(func(s *State) {
		ns := api.DefaultNamespace
		s.SetFunction(FunctionInfo{Namespace: ns, Name: "secure", DefaultRevision: "secure-00001", HTTPSRedirect: true})
		s.SetRevision(RevisionInfo{Namespace: ns, Name: "secure-00001", Function: "secure", Number: 1})
		s.SetEndpoint(EndpointInfo{Namespace: ns, Replica: "secure-00001-a", Function: "secure", Revision: "secure-00001", Node: "n1", Addr: addr, Phase: api.ReplicaReady})
	})
	if code, loc := f.plain(t, "GET", "secure.surge.localhost", "/x", nil); code != 308 || loc != "https://secure.surge.localhost:"+f.port+"/x" {
		t.Errorf("secure by host: %d to %q", code, loc)
	}
	if code, loc := f.plain(t, "GET", "localhost", "/fn/secure/x", nil); code != 308 || loc != "https://localhost:"+f.port+"/fn/secure/x" {
		t.Errorf("secure by path: %d to %q", code, loc)
	}
	if code, _ := f.plain(t, "GET", "hello.surge.localhost", "/x", nil); code != 200 {
		t.Errorf("hello, without the redirect: %d, want 200", code)
	}
	resp, err := f.httpsClient(true).Get("https://secure.surge.localhost:" + f.port + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("secure over TLS: %d, want 200", resp.StatusCode)
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"hello.surge.localhost": true, "a-b_c.example": true, "10.0.0.1": true, "[::1]": true, "[fe80::1]": true,
		"": false, "a@b": false, "a/b": false, "a b": false, "[::1": false, "[::g]": false, "a%2f": false,
	} {
		if got := validHost([]byte(h)); got != want {
			t.Errorf("validHost(%q) = %v, want %v", h, got, want)
		}
	}
}
