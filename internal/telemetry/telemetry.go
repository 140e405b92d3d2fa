// Package telemetry is what the roles' metrics share: a process's own
// registry (the Go and process collectors and surge_build_info), and the
// HTTP endpoint that serves metrics — open when it listens on loopback, and
// behind a token that may read metrics anywhere else, since nothing of
// Surge listens unauthenticated on the network but health endpoints.
//
// Each role registers its own metrics on the prometheus.Registerer it is
// given (no package global): `surge agent` and `surge gateway` serve their
// registry with the process's at --metrics-addr, `surge server` at the
// API's /metrics, and `surge up` all of them at one address.
package telemetry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/surgeplatform/surge/internal/clock"
)

// NewProcessRegistry returns a registry holding what describes the process
// rather than a role: the Go runtime's and the process's collectors, and
// surge_build_info for version. A process has one, served beside its
// roles' registries (see Gatherers), so that `surge up`, which runs every
// role, reports the process once.
func NewProcessRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister( // a new registry and three distinct collectors: cannot clash
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo(version),
	)
	return reg
}

// BuildInfo is the gauge surge_build_info, always 1, whose labels say
// which build runs: version (as -ldflags set it), the Go version, and the
// VCS revision the binary was built from when the toolchain recorded it.
func BuildInfo(version string) prometheus.Collector {
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "surge_build_info",
		Help: "Always 1; the labels say which build of surge runs.",
		ConstLabels: prometheus.Labels{
			"version": version, "goversion": runtime.Version(), "revision": revision,
		},
	})
	g.Set(1)
	return g
}

// IsLoopback reports whether a listen address (HOST:PORT) accepts
// connections from this machine only: its host is a loopback address or
// "localhost". An empty host or a wildcard is every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Authorizer decides whether the bearer token of a scrape may read
// metrics: nil if so, ErrForbidden (or another error: the check could not
// be made) if not. It is called from the endpoint's request goroutines,
// concurrently, and may block on I/O until ctx ends.
type Authorizer func(ctx context.Context, token string) error

// ErrForbidden is an Authorizer's answer to a token that may not read
// metrics: unknown, revoked, or of a role that reads no metrics.
var ErrForbidden = errors.New("telemetry: token may not read metrics")

// Handler serves g's metrics in the Prometheus text format. With authz
// nil it answers anyone (an endpoint on loopback); otherwise a request
// needs "Authorization: Bearer TOKEN" that authz accepts, else 401, or 503
// when authz could not decide.
func Handler(g prometheus.Gatherer, authz Authorizer) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	if authz == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tok = strings.TrimSpace(tok)
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="surge-metrics"`)
			http.Error(w, "metrics on this address need a bearer token that may read metrics (surge token create --role metrics)", http.StatusUnauthorized)
			return
		}
		switch err := authz(r.Context(), tok); {
		case errors.Is(err, ErrForbidden):
			http.Error(w, "this token may not read metrics", http.StatusUnauthorized)
		case err != nil:
			http.Error(w, "the token cannot be checked now; try again", http.StatusServiceUnavailable)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// CachedAuthorizer remembers a's answers for ttl on clk (nil: the wall
// clock), keyed by the token's SHA-256, so that a scrape every few seconds
// costs the API one check per ttl; a revoked token keeps reading metrics
// for at most ttl. An answer that could not be made (neither nil nor
// ErrForbidden) is not kept. It holds at most maxCachedTokens answers.
func CachedAuthorizer(a Authorizer, clk clock.Clock, ttl time.Duration) Authorizer {
	clk = clock.Or(clk)
	var mu sync.Mutex
	type answer struct {
		err     error
		expires time.Time
	}
	cache := map[[32]byte]answer{}
	return func(ctx context.Context, token string) error {
		key := sha256.Sum256([]byte(token))
		now := clk.Now()
		mu.Lock()
		ans, ok := cache[key]
		mu.Unlock()
		if ok && now.Before(ans.expires) {
			return ans.err
		}
		err := a(ctx, token)
		if err != nil && !errors.Is(err, ErrForbidden) {
			return err
		}
		mu.Lock()
		if len(cache) >= maxCachedTokens {
			clear(cache) // a flood of bad tokens costs checks, not memory
		}
		cache[key] = answer{err: err, expires: now.Add(ttl)}
		mu.Unlock()
		return err
	}
}

// maxCachedTokens bounds CachedAuthorizer's memory.
const maxCachedTokens = 256

// Endpoint is a metrics listener: /metrics, and /healthz for probes.
type Endpoint struct {
	// Addr is where it listens, HOST:PORT.
	Addr string
	// Gatherer is what /metrics serves.
	Gatherer prometheus.Gatherer
	// Authorize checks scrapers' tokens; it must be set unless Addr is on
	// loopback, where it is not used.
	Authorize Authorizer
}

// Listen checks e and binds its address; Serve serves the listener.
func (e Endpoint) Listen() (net.Listener, error) {
	if e.Gatherer == nil {
		return nil, errors.New("metrics endpoint: no Gatherer")
	}
	if !IsLoopback(e.Addr) && e.Authorize == nil {
		return nil, fmt.Errorf("metrics address %q is not on loopback: its scrapers need a token, and no Authorizer checks them", e.Addr)
	}
	ln, err := net.Listen("tcp", e.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", e.Addr, err)
	}
	return ln, nil
}

// Serve serves e on ln until ctx ends, then closes it and returns nil once
// the requests in flight are done (a scrape is short), or an error if
// serving failed.
func (e Endpoint) Serve(ctx context.Context, ln net.Listener) error {
	var authz Authorizer
	if !IsLoopback(e.Addr) {
		authz = e.Authorize
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(e.Gatherer, authz))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// URL is where a scraper finds the endpoint listening at addr (as bound,
// HOST:PORT): http://HOST:PORT/metrics, the host left as bound (an API
// server puts the node's or gateway's address in place of a wildcard).
func URL(addr string) string {
	return "http://" + addr + "/metrics"
}
