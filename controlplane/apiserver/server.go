// Package apiserver serves Surge's REST API: the objects of package api
// under /v1, kept in etcd by package store, behind bearer-token
// authentication and role checks.
//
// Routes (NS is a namespace, KIND a plural such as functions):
//
//	GET    /healthz, /readyz                   open, for probes
//	GET    /metrics                            Prometheus, any token
//	GET    /v1/version
//	GET    /v1/KIND                            list in every namespace
//	GET    /v1/namespaces/NS/KIND              list; ?watch=true streams changes
//	GET    /v1/namespaces/NS/KIND/NAME         get
//	POST   /v1/namespaces/NS/KIND              create
//	PUT    /v1/namespaces/NS/KIND/NAME         replace (functions: create or replace)
//	DELETE /v1/namespaces/NS/KIND/NAME         delete
//	GET    /v1/nodes[/NAME], POST, PUT, DELETE nodes have no namespace
//	PUT    /v1/nodes/NAME/lease                a node agent's heartbeat
//	POST   /v1/tokens, GET /v1/tokens, DELETE /v1/tokens/ID
//
// A watch answers newline-delimited JSON api.WatchEvent values. It resumes
// from ?resourceVersion=N (the list's, or the last event's). When N has been
// compacted away it answers 410, or, when etcd tells so only once the
// stream has begun, ends the stream with an ERROR event carrying the 410.
package apiserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// Config is what the API server needs. Store and Tokens are required; the
// other fields have defaults.
type Config struct {
	// Store keeps the objects.
	Store *store.Store
	// Tokens authenticates requests.
	Tokens *auth.Store
	// Log receives request errors; nil discards them.
	Log *slog.Logger
	// Registerer receives the server's metrics; Gatherer serves /metrics.
	// A nil Registerer is a private registry; a nil Gatherer is the
	// Registerer when that is a Gatherer too (a *prometheus.Registry).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Ready reports whether the server can serve, for /readyz; it is called
	// with a context that ends after readyTimeout. Nil reads from the
	// store's etcd.
	Ready func(ctx context.Context) error
	// Version is reported by /v1/version.
	Version string
	// Clock times requests and stamps what the server records; nil is the
	// wall clock.
	Clock clock.Clock
	// SignCSR, when set, signs node agents' serving certificates with the
	// cluster CA; it returns the certificate and the CA, both PEM.
	SignCSR func(csrPEM []byte, commonName string, hosts []string) (cert, ca []byte, err error)
	// OnActivate, when set, learns of each activation (the autoscaler, so
	// that it counts the demand and does not scale the revision straight
	// back) and returns the replicas the demand needs now; without it an
	// activation asks for one.
	OnActivate func(rev *api.Revision, demand int32) int32
	// PodCIDR is split into one subnet of NodeSubnetBits per node.
	PodCIDR        netip.Prefix
	NodeSubnetBits int
	// Extra mounts more handlers on the authenticated mux (the registry),
	// keyed by pattern, with the resource name the role check uses.
	Extra []Route
}

// Route is a handler mounted beside the API.
type Route struct {
	Pattern  string
	Resource string
	Handler  http.Handler
}

// Server is the API's http.Handler.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	metrics *metrics
}

// readyTimeout bounds a /readyz check: a probe that hangs is a failed probe.
// It is a deadline on a call to etcd, so it runs on the wall clock, as
// etcd does, not on Config.Clock.
const readyTimeout = 2 * time.Second

// New builds the API handler.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), metrics: m}
	s.routes()
	return s, nil
}

// withDefaults returns a copy with the empty fields filled, or an error
// naming every required field that is missing.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("apiserver config: Store is required"))
	}
	if c.Tokens == nil {
		errs = append(errs, errors.New("apiserver config: Tokens is required"))
	}
	if c.Registerer == nil {
		reg := prometheus.NewRegistry()
		c.Registerer = reg
		if c.Gatherer == nil {
			c.Gatherer = reg
		}
	}
	if c.Gatherer == nil {
		g, ok := c.Registerer.(prometheus.Gatherer)
		if !ok {
			errs = append(errs, errors.New("apiserver config: Gatherer is required when the Registerer does not gather"))
		}
		c.Gatherer = g
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	c.Clock = clock.Or(c.Clock)
	if c.Ready == nil {
		cli := c.Store.Client()
		c.Ready = func(ctx context.Context) error {
			_, err := cli.Get(ctx, store.Prefix+"readyz", clientv3.WithCountOnly())
			return err
		}
	}
	return c, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type principalKey struct{}

// principal is the token a request authenticated with.
func principal(ctx context.Context) auth.Token {
	t, _ := ctx.Value(principalKey{}).(auth.Token)
	return t
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /metrics", auth.ResourceMetrics, auth.Read,
		promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP)
	s.handle("GET /v1/version", "version", auth.Read, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version, "api": api.Version})
	})
	// whoami lets other listeners (node agents' log endpoints) check a
	// token they were handed without holding the token store.
	s.handle("GET /v1/whoami", "whoami", auth.Read, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, principal(r.Context()))
	})

	registerKind(s, kindOps[api.Function]{
		validate: func(f *api.Function) error { api.SetDefaults(&f.Spec); return api.ValidateFunction(f) },
		create:   s.createFunction,
		replace:  s.replaceFunction,
		delete:   s.cfg.Store.DeleteFunction,
	})
	registerKind(s, kindOps[api.Revision]{})
	registerKind(s, kindOps[api.Traffic]{
		validate: api.ValidateTraffic,
		replace:  s.replaceTraffic,
	})
	registerKind(s, kindOps[api.Scale]{
		validate: api.ValidateScale,
		replace:  s.keepStatus(store.UpdateScaleSpec),
	})
	registerKind(s, kindOps[api.Replica]{
		validate: validateReplica,
		create:   createOnly[api.Replica](s),
		replace:  replaceOnly[api.Replica](s),
		delete:   deleteOne[api.Replica](s),
		status: func(ctx context.Context, r *api.Replica) (*api.Replica, error) {
			return store.UpdateReplicaStatus(ctx, s.cfg.Store, r)
		},
		filter: replicaFilter,
	})
	registerKind(s, kindOps[api.Node]{
		validate: validateNode,
		create:   s.createNode,
		replace:  replaceOnly[api.Node](s),
		delete: func(ctx context.Context, key api.Key, rv string) error {
			return s.cfg.Store.DeleteNode(ctx, key.Name, rv)
		},
		status: func(ctx context.Context, n *api.Node) (*api.Node, error) {
			return store.UpdateNodeStatus(ctx, s.cfg.Store, n)
		},
		show: s.showNodes,
	})
	s.tokenRoutes()
	s.activateRoutes()
	s.statsRoutes()
	s.certificateRoutes()
	s.heartbeatRoutes()
	for _, rt := range s.cfg.Extra {
		v := auth.Read
		if m, _, _ := strings.Cut(rt.Pattern, " "); m != "GET" && m != "HEAD" {
			v = auth.Write
		}
		s.handle(rt.Pattern, rt.Resource, v, rt.Handler.ServeHTTP)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.authenticate(r); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeError(w, s.cfg.Log, api.NewError(http.StatusNotFound, api.ReasonNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
}

// handle mounts an authenticated, authorised, measured handler.
func (s *Server) handle(pattern, resource string, verb auth.Verb, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := s.cfg.Clock.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			s.metrics.observe(resource, r.Method, sw.code, s.cfg.Clock.Since(start), isWatch(r))
		}()
		tok, err := s.authenticate(r)
		if err != nil {
			writeError(sw, s.cfg.Log, err)
			return
		}
		if !auth.Allowed(tok.Role, verb, resource) {
			writeError(sw, s.cfg.Log, api.NewError(http.StatusForbidden, api.ReasonForbidden,
				"token %s (role %s) may not %s %s", tok.ID, tok.Role, verbWord(verb), resource))
			return
		}
		h(sw, r.WithContext(context.WithValue(r.Context(), principalKey{}, tok)))
	})
}

func verbWord(v auth.Verb) string {
	if v == auth.Write {
		return "write"
	}
	return "read"
}

func (s *Server) authenticate(r *http.Request) (auth.Token, error) {
	h := r.Header.Get("Authorization")
	bearer, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || bearer == "" {
		return auth.Token{}, unauthorized("missing bearer token: send \"Authorization: Bearer TOKEN\" (the token is in your client config)")
	}
	tok, err := s.cfg.Tokens.Authenticate(r.Context(), strings.TrimSpace(bearer))
	if errors.Is(err, auth.ErrInvalidToken) {
		return auth.Token{}, unauthorized("invalid or revoked token")
	}
	if err != nil {
		return auth.Token{}, api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "cannot check the token now: %v", err)
	}
	return tok, nil
}

func unauthorized(msg string) *api.Error {
	return api.NewError(http.StatusUnauthorized, api.ReasonUnauthorized, "%s", msg)
}

// statusWriter remembers the status code for metrics, and passes Flush on
// for watch streams.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_apiserver_requests_total",
			Help: "API requests by resource, method and status code.",
		}, []string{"resource", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_apiserver_request_duration_seconds",
			Help:    "API request latency by resource and method (watches excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"resource", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe counts a request; a watch's duration is how long the client
// stayed, not a latency, so it is left out of the histogram.
func (m *metrics) observe(resource, method string, code int, d time.Duration, watch bool) {
	m.requests.WithLabelValues(resource, method, strconv.Itoa(code)).Inc()
	if !watch {
		m.duration.WithLabelValues(resource, method).Observe(d.Seconds())
	}
}
