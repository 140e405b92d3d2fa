package benchmarks

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strings"
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
// configuration, metrics registered), routing hello to backend, but with
// no per-address connection cap: the load generators' connections (B8's
// 10,000) all come from 127.0.0.1. With ln nil it listens on addr.
func SurgeGateway(addr, backend string, ln net.Listener) (*gateway.Gateway, error) {
	cfg := gateway.DefaultConfig()
	cfg.Addr = addr
	cfg.MaxConnsPerIP = 0
	return surgeGateway(cfg, backend, ln)
}

// SurgeGatewayTLS is SurgeGateway serving HTTPS at addr with the
// certificate and key of certFile and keyFile (and its plain HTTP on a
// port of loopback that nothing uses).
func SurgeGatewayTLS(addr, backend, certFile, keyFile string) (*gateway.Gateway, error) {
	cfg := gateway.DefaultConfig()
	cfg.Addr, cfg.TLSAddr, cfg.TLSCertFile, cfg.TLSKeyFile = "127.0.0.1:0", addr, certFile, keyFile
	cfg.MaxConnsPerIP = 0
	return surgeGateway(cfg, backend, nil)
}

func surgeGateway(cfg gateway.Config, backend string, ln net.Listener) (*gateway.Gateway, error) {
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

// MemStats are a process's memory figures, in bytes, as ServeMemStats
// serves them.
type MemStats struct {
	// Stacks is the goroutine stacks in use; Heap the heap spans in use;
	// Runtime the runtime's own structures (spans, caches, GC metadata,
	// profiling buckets).
	Stacks, Heap, Runtime int64
	// Goroutines is how many there are.
	Goroutines int64
	// HeapBy splits the live heap by what allocated it (see heapKinds),
	// estimated from the heap profile's samples as pprof scales them;
	// nil when the process does not profile (runtime.MemProfileRate 0).
	HeapBy map[string]int64
}

// heapKinds classify a live allocation by the innermost frame of its
// stack that names one of them, first match wins.
var heapKinds = []struct{ frame, kind string }{
	{"bufio.NewReaderSize", "buffers"},
	{"bufio.NewWriterSize", "buffers"},
	{"fasthttp.(*Server).acquireCtx", "request state"},
	{"gateway.newClientConn", "connection state"},
	{"gateway.(*parking)", "connection state"},
	{"fasthttp.(*Server).serveConn", "connection state"},
	{"net.newFD", "socket"},
	{"net.(*netFD)", "socket"},
	{"internal/poll.", "socket"},
	{"net.newTCPConn", "socket"},
	{"runtime.malg", "goroutines"},
}

// ServeMemStats answers with this process's MemStats as JSON, after two
// garbage collections (the heap profile is as of the last): gwbench serves
// it for B8's breakdown of what an idle connection costs.
func ServeMemStats(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	out := MemStats{
		Stacks:     int64(m.StackInuse),
		Heap:       int64(m.HeapInuse),
		Runtime:    int64(m.MSpanInuse + m.MCacheInuse + m.BuckHashSys + m.GCSys + m.OtherSys),
		Goroutines: int64(runtime.NumGoroutine()),
	}
	if rate := runtime.MemProfileRate; rate > 0 {
		out.HeapBy = map[string]int64{}
		n, _ := runtime.MemProfile(nil, false)
		recs := make([]runtime.MemProfileRecord, n+100)
		n, _ = runtime.MemProfile(recs, false)
		for _, rec := range recs[:n] {
			if rec.AllocObjects == 0 || rec.InUseBytes() <= 0 {
				continue
			}
			// A sample stands for 1/(1-e^(-size/rate)) allocations of its size.
			size := float64(rec.AllocBytes) / float64(rec.AllocObjects)
			scale := 1 / -math.Expm1(-size/float64(rate))
			out.HeapBy[heapKind(rec.Stack())] += int64(float64(rec.InUseBytes()) * scale)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func heapKind(stack []uintptr) string {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		for _, k := range heapKinds {
			if strings.Contains(f.Function, k.frame) {
				return k.kind
			}
		}
		if !more {
			return "other"
		}
	}
}
