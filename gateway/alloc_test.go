//go:build !race

package gateway

import (
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
