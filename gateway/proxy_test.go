package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/api"
)

// echo answers with what it received, as JSON.
type echoed struct {
	Method, URI, Host, Body string
	Header                  http.Header
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "X-Backend-Hop")
	w.Header().Set("X-Backend-Hop", "secret")
	w.Header().Set("Keep-Alive", "timeout=5")
	w.Header().Set("X-Kept", "yes")
	_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, URI: r.RequestURI, Host: r.Host, Body: string(b), Header: r.Header})
}

func decodeEcho(t *testing.T, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("decode echo %q: %v", body, err)
	}
	return e
}

func TestProxyRoutesAndRewritesHeaders(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, echoHandler))
	tg.Routes().Update(func(s *State) {
		s.SetFunction(FunctionInfo{Namespace: "prod", Name: "hello", DefaultRevision: "hello-00007"})
		s.SetRevision(RevisionInfo{Namespace: "prod", Name: "hello-00007", Function: "hello", Number: 7})
		s.SetEndpoint(EndpointInfo{Namespace: "prod", Replica: "p1", Function: "hello", Revision: "hello-00007", Addr: backend(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "prod")
		}), Phase: "Ready"})
	})

	tests := []struct {
		name, host, path string
		wantURI          string
	}{
		{"host", "hello.surge.localhost", "/a/b?x=1", "/a/b?x=1"},
		{"host with port and case", "Hello.Surge.Localhost:8080", "/", "/"},
		{"host with default namespace", "hello.default.surge.localhost", "/z", "/z"},
		{"path prefix stripped", "127.0.0.1", "/fn/hello/a/b?x=1&y=%2F", "/a/b?x=1&y=%2F"},
		{"path root", "anything", "/fn/hello", "/"},
		{"path keeps encoding", "anything", "/fn/hello/a%20b/%2e%2e", "/a%20b/%2e%2e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := tg.do(t, "GET", tt.host, tt.path, nil, map[string]string{
				"Connection":        "X-Client-Hop",
				"X-Client-Hop":      "secret",
				"Proxy-Connection":  "keep-alive",
				"Te":                "trailers",
				"X-Forwarded-For":   "6.6.6.6",
				"X-Forwarded-Proto": "gopher",
			})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			e := decodeEcho(t, body)
			if e.URI != tt.wantURI {
				t.Errorf("replica saw URI %q, want %q", e.URI, tt.wantURI)
			}
			if e.Host != tt.host {
				t.Errorf("replica saw Host %q, want %q", e.Host, tt.host)
			}
			for _, h := range []string{"X-Client-Hop", "Proxy-Connection", "Te"} {
				if v := e.Header.Get(h); v != "" {
					t.Errorf("hop-by-hop %s = %q forwarded", h, v)
				}
			}
			if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q, want the client address only (untrusted)", got)
			}
			if got := e.Header.Get("X-Forwarded-Proto"); got != "http" {
				t.Errorf("X-Forwarded-Proto = %q", got)
			}
			if got := e.Header.Get("X-Forwarded-Host"); got != tt.host {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, tt.host)
			}
			if resp.Header.Get("X-Backend-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("hop-by-hop response headers forwarded: %v", resp.Header)
			}
			if resp.Header.Get("X-Kept") != "yes" {
				t.Errorf("end-to-end response header lost: %v", resp.Header)
			}
		})
	}

	t.Run("namespace host", func(t *testing.T) {
		_, body := tg.do(t, "GET", "hello.prod.surge.localhost", "/", nil, nil)
		if body != "prod" {
			t.Errorf("body %q, want prod", body)
		}
	})

	t.Run("trusted forwarded headers are extended", func(t *testing.T) {
		cfg := testConfig()
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		tg2 := startGateway(t, cfg, Deps{})
		tg2.route("hello", "hello-00001", 0, 0, backend(t, echoHandler))
		_, body := tg2.do(t, "GET", "hello.surge.localhost", "/", nil, map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
		e := decodeEcho(t, body)
		if got := e.Header.Get("X-Forwarded-For"); got != "6.6.6.6, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", got)
		}
		if got := e.Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("X-Forwarded-Proto = %q", got)
		}
	})
}

func TestProxyBodies(t *testing.T) {
	cfg := testConfig()
	cfg.ReplayBodyBytes = 1024
	tg := startGateway(t, cfg, Deps{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, echoHandler))
	for _, size := range []int{0, 10, 1024, 1025, 300 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			in := strings.Repeat("x", size)
			resp, body := tg.do(t, "POST", "hello.surge.localhost", "/", strings.NewReader(in), nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if e := decodeEcho(t, body); e.Body != in {
				t.Errorf("replica got %d bytes, want %d", len(e.Body), size)
			}
		})
	}
	t.Run("chunked", func(t *testing.T) {
		in := strings.Repeat("y", 100<<10)
		resp, body := tg.do(t, "PUT", "hello.surge.localhost", "/", io.MultiReader(strings.NewReader(in)), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if e := decodeEcho(t, body); e.Body != in || e.Method != "PUT" {
			t.Errorf("replica got %s with %d bytes", e.Method, len(e.Body))
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp, body := tg.do(t, "HEAD", "hello.surge.localhost", "/", nil, nil)
		if resp.StatusCode != 200 || body != "" {
			t.Errorf("HEAD: %d %q", resp.StatusCode, body)
		}
	})
}

func TestNotFoundAndRevisionHeader(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "one") }))
	tg.Routes().Update(func(s *State) {
		s.SetRevision(RevisionInfo{Namespace: "default", Name: "hello-00002", Function: "hello", Number: 2})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "two", Function: "hello", Revision: "hello-00002",
			Addr: backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "two") }), Phase: "Ready"})
		s.SetRevision(RevisionInfo{Namespace: "default", Name: "hello-00003", Function: "hello", Number: 3})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "three", Function: "hello", Revision: "hello-00003",
			Addr: backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "three") }), Phase: "Ready"})
		// hello-00002 is tagged at 0%; hello-00003 neither takes traffic
		// nor carries a tag.
		s.SetTraffic("default", "hello", []apiTarget{{Revision: "hello-00001", Percent: 100}, {Revision: "hello-00002", Tag: "next"}})
	})
	tests := []struct {
		name, host, path, rev string
		code                  int
		body                  string
	}{
		{"unknown host", "nope.surge.localhost", "/", "", 404, `{"error":"no function is served at this address"}` + "\n"},
		{"foreign host", "example.com", "/", "", 404, `{"error":"no function is served at this address"}` + "\n"},
		{"unknown path", "x", "/fn/nope/", "", 404, ""},
		{"too many labels", "a.b.c.surge.localhost", "/", "", 404, ""},
		{"traffic", "hello.surge.localhost", "/", "", 200, "one"},
		{"revision header", "hello.surge.localhost", "/", "hello-00001", 200, "one"},
		{"a tagged revision at 0%", "hello.surge.localhost", "/", "hello-00002", 200, "two"},
		// Neither takes traffic nor carries a tag: anonymous clients may
		// not call (nor wake) it, and it looks like one that is not there.
		{"a revision out of the traffic", "hello.surge.localhost", "/", "hello-00003", 404, `{"error":"the revision named by Surge-Revision is not one of this function's that take traffic or carry a tag"}` + "\n"},
		{"unknown revision", "hello.surge.localhost", "/", "hello-00009", 404, `{"error":"the revision named by Surge-Revision is not one of this function's that take traffic or carry a tag"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.rev != "" {
				hdr["Surge-Revision"] = tt.rev
			}
			resp, body := tg.do(t, "GET", tt.host, tt.path, nil, hdr)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.code, body)
			}
			if tt.code == 404 {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
					t.Errorf("404 body %q is not {\"error\": ...}", body)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if tt.body != "" && body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
		})
	}
	if got := testutil.ToFloat64(tg.metrics.unrouted.WithLabelValues("404")); got < 6 {
		t.Errorf("unrouted 404s counted %v", got)
	}
	if got := testutil.ToFloat64(tg.metrics.requests.WithLabelValues("default", "hello", "hello-00002", "2xx")); got != 1 {
		t.Errorf("requests{hello-00002,200} = %v, want 1", got)
	}

	// Asked with Surge-Debug (surge invoke -v), the answer names the
	// replica and the revision that gave it; not otherwise.
	resp, _ := tg.do(t, "GET", "hello.surge.localhost", "/", nil, map[string]string{"Surge-Debug": "1", "Surge-Revision": "hello-00002"})
	if got := resp.Header.Get("Surge-Served-By") + " " + resp.Header.Get("Surge-Revision"); got != "two hello-00002" {
		t.Errorf("Surge-Served-By and Surge-Revision %q, want %q", got, "two hello-00002")
	}
	if resp, _ := tg.do(t, "GET", "hello.surge.localhost", "/", nil, nil); resp.Header.Get("Surge-Served-By") != "" {
		t.Errorf("Surge-Served-By %q unasked", resp.Header.Get("Surge-Served-By"))
	}
}

func TestStreamingResponseReachesClientAsWritten(t *testing.T) {
	release := make(chan struct{})
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("sse", "sse-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: two\n\n")
	}))
	req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
	req.Host = "sse.surge.localhost"
	resp, err := httpClient.Do(req)
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

func TestStreamingRequestBodyReachesReplicaAsSent(t *testing.T) {
	gotFirst := make(chan string, 1)
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("up", "up-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			t.Errorf("replica read: %v", err)
		}
		gotFirst <- string(buf)
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s|%s", buf, rest)
	}))
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first"))
		<-gotFirst // the replica saw the first part before the client sent the rest
		pw.Write([]byte("second"))
		pw.Close()
	}()
	resp, body := tg.do(t, "POST", "up.surge.localhost", "/", pr, nil)
	if resp.StatusCode != 200 || body != "first|second" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// apiTarget keeps the tests short.
type apiTarget = api.TrafficTarget
