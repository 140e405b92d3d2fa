package benchmarks

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/gateway"
)

// The servers of the gateway benchmarks, shared by the in-process B8
// allocation count and by gwbench, which runs them pinned to a core.

// HelloHost is the Host every gateway benchmark request carries: the
// function "hello" under the gateway's default domain. nginx, HAProxy and
// httputil ignore it.
const HelloHost = "hello.surge.localhost"

// HelloBackend is the backend: a fixed 5-byte answer, as fast as fasthttp
// serves it, so the proxies' costs dominate.
func HelloBackend() *fasthttp.Server {
	body := []byte("hello")
	return &fasthttp.Server{
		Handler: func(c *fasthttp.RequestCtx) {
			c.SetContentType("text/plain")
			c.SetBody(body)
		},
		IdleTimeout: 2 * time.Minute,
	}
}

// HelloRoute is a gateway.RouteSource that routes the function "hello"
// to one replica at Addr, once, and then waits.
type HelloRoute struct{ Addr string }

var _ gateway.RouteSource = HelloRoute{}

// Run implements gateway.RouteSource.
func (s HelloRoute) Run(ctx context.Context, u gateway.Updater) error {
	u.Update(func(st *gateway.State) {
		ns := api.DefaultNamespace
		st.SetFunction(gateway.FunctionInfo{Namespace: ns, Name: "hello", DefaultRevision: "hello-00001"})
		st.SetRevision(gateway.RevisionInfo{Namespace: ns, Name: "hello-00001", Function: "hello", Number: 1})
		st.SetEndpoint(gateway.EndpointInfo{Namespace: ns, Replica: "hello-00001-a", Function: "hello",
			Revision: "hello-00001", Node: "bench", Addr: s.Addr, Phase: api.ReplicaReady})
	})
	<-ctx.Done()
	return ctx.Err()
}

// SurgeGateway is the gateway as `surge gateway` runs it (the default
// configuration, metrics registered), routing hello to backend. With ln
// nil it listens on addr.
func SurgeGateway(addr, backend string, ln net.Listener) (*gateway.Gateway, error) {
	cfg := gateway.DefaultConfig()
	cfg.Addr = addr
	return gateway.New(cfg, gateway.Deps{
		Sources:    []gateway.RouteSource{HelloRoute{backend}},
		Registerer: prometheus.NewRegistry(),
		Log:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Listener:   ln,
	})
}

// HTTPUtilProxy is the standard library's reverse proxy to backend,
// tuned: an idle pool larger than the load's connections, no compression,
// X-Forwarded-* set as the gateway sets them.
func HTTPUtilProxy(backend string) http.Handler {
	target := &url.URL{Scheme: "http", Host: backend}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// HTTPUtilServer serves HTTPUtilProxy with keep-alive limits like the
// other peers'.
func HTTPUtilServer(addr, backend string) *http.Server {
	return &http.Server{Addr: addr, Handler: HTTPUtilProxy(backend), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
}
