//go:build !race

package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestZeroAllocsPerProxiedRequest locks in the hot path's promise: in
// steady state a proxied request allocates nothing — not in the gateway's
// handler, its upstream exchange or the response streaming. The replica
// and the client are fasthttp too (they allocate nothing either), so the
// process-wide count AllocsPerRun takes is the gateway's. The requests
// carry no traceparent, so the gateway starts a trace for each; with the
// access log on, each is recorded too (its writer formats on its own
// goroutine, outside the request's count but inside the process's: the
// writer reuses its buffer).
func TestZeroAllocsPerProxiedRequest(t *testing.T) {
	for _, mode := range []AccessLogMode{AccessLogOff, AccessLogFull} {
		t.Run("access log "+string(mode), func(t *testing.T) { testZeroAllocs(t, mode) })
	}
}

func testZeroAllocs(t *testing.T, mode AccessLogMode) {
	upstream := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("hello")
	}}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(uln)
	defer upstream.Shutdown()

	cfg := testConfig()
	cfg.AccessLog = mode
	tg := startGateway(t, cfg, Deps{AccessLog: io.Discard})
	tg.route("hello", "hello-00001", 0, 0, uln.Addr().String())

	client := &fasthttp.HostClient{Addr: tg.addr, MaxConns: 1}
	tests := []struct {
		name, method, body string
		want               float64
	}{
		{"GET", "GET", "", 0},
		{"HEAD", "HEAD", "", 0},
		// fasthttp's server, in StreamRequestBody mode, drains every request
		// body stream after the handler with io.CopyN, whose LimitReader
		// escapes: one 24-byte allocation per request that has a body, in
		// fasthttp, outside the gateway's code.
		{"POST", "POST", "payload", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("/path?q=1")
			req.Header.SetHost("hello.surge.localhost")
			req.Header.SetMethod(tt.method)
			if tt.body != "" {
				req.SetBodyString(tt.body)
			}
			do := func() {
				if err := client.DoTimeout(req, resp, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode() != 200 || (tt.method != "HEAD" && string(resp.Body()) != "hello") {
					t.Fatalf("got %d %q", resp.StatusCode(), resp.Body())
				}
			}
			for range 200 { // warm every pool
				do()
			}
			if n := testing.AllocsPerRun(1000, do); n > tt.want {
				t.Errorf("%v allocations per proxied %s, want %v", n, tt.method, tt.want)
			}
		})
	}
}

// TestZeroAllocsPerProxiedRequestOverTLS: over TLS too, once the
// connection's handshake is done, the gateway allocates nothing per
// proxied request. crypto/tls itself does: each record it reads costs one
// 24-byte object (readFromUntil's atLeastReader escapes into
// bytes.Buffer.ReadFrom), on the client's side and on the gateway's. So
// the count is compared with a fasthttp server answering the same request
// itself over the same TLS, with the same client: the gateway must add
// nothing to it.
func TestZeroAllocsPerProxiedRequestOverTLS(t *testing.T) {
	answer := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("hello")
	}
	upstream := &fasthttp.Server{Handler: answer}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(uln)
	defer upstream.Shutdown()

	f := startTLSFixture(t, nil)
	f.route("hello", "hello-00001", 0, 0, uln.Addr().String())

	// The reference: the answer straight from a fasthttp server, over the
	// gateway's own TLS configuration and certificates.
	direct := &fasthttp.Server{Handler: answer}
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go direct.Serve(tls.NewListener(dln, f.tlsConfig))
	defer direct.Shutdown()

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			allocs := func(addr string) float64 {
				cfg := f.ca.clientConfig("hello.surge.localhost")
				cfg.MinVersion, cfg.MaxVersion = v, v
				client := &fasthttp.HostClient{Addr: addr, IsTLS: true, TLSConfig: cfg, MaxConns: 1}
				defer client.CloseIdleConnections()
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI("https://hello.surge.localhost/path?q=1")
				do := func() {
					if err := client.DoTimeout(req, resp, 10*time.Second); err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode() != 200 || string(resp.Body()) != "hello" {
						t.Fatalf("got %d %q", resp.StatusCode(), resp.Body())
					}
				}
				for range 200 { // warm every pool
					do()
				}
				return testing.AllocsPerRun(1000, do)
			}
			ref, got := allocs(dln.Addr().String()), allocs(f.tlsAddr)
			t.Logf("allocations per request over %s: %v straight from fasthttp, %v through the gateway", tls.VersionName(v), ref, got)
			if got > ref || ref > 2 {
				t.Errorf("%v allocations per proxied GET over %s, %v straight from fasthttp over the same TLS; want the gateway to add none, and crypto/tls's one per record read on each side at most", got, tls.VersionName(v), ref)
			}
		})
	}
}
