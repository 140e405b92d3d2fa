// Package apiserver serves Surge's REST API: the objects of package api
// under /v1, kept in etcd by package store, behind bearer-token
// authentication and role checks.
//
// Routes (NS is a namespace, KIND a plural such as functions):
//
//	GET    /healthz, /readyz                   open, for probes
//	GET    /metrics                            Prometheus: a token that may read metrics (not the join token)
//	GET    /v1/sd/prometheus                   every role's metrics endpoint, for http_sd_configs (controlplane)
//	GET    /v1/version
//	GET    /v1/KIND                            list in every namespace
//	GET    /v1/namespaces/NS/KIND              list; ?watch=true streams changes
//	GET    /v1/namespaces/NS/KIND/NAME         get
//	POST   /v1/namespaces/NS/KIND              create
//	PUT    /v1/namespaces/NS/KIND/NAME         replace (functions: create or replace)
//	DELETE /v1/namespaces/NS/KIND/NAME         delete
//	GET    /v1/nodes[/NAME], POST, PUT, DELETE nodes have no namespace
//	PUT    /v1/nodes/NAME/lease                a node agent's heartbeat
//	POST   /v1/nodes/NAME/bootstrap            the join token, traded once for the node's certificate
//	POST   /v1/nodes/NAME/certificate          a node renews its certificate, or gets a serving one
//	GET    /v1/namespaces/NS/replicas/NAME/log a replica's log, fetched from its agent (?follow=true)
//	POST   /v1/tokens, GET /v1/tokens, DELETE /v1/tokens/ID
//	GET    /v1/stats                           the gateways' load per revision
//	POST   /v1/namespaces/NS/rollouts/NAME/rollback  all of a function's traffic back, at once
//	DELETE /v1/namespaces/NS/revisions/NAME    a revision no traffic, tag or rollout keeps
//	*      /v2/...                             the OCI registry (bearer, or basic with the token as password)
//
// A request authenticates with a bearer token (admin, viewer, gateway; the
// join token only bootstraps) or, for a node, with its client certificate
// from the node CA. A node may change only its own Node and lease and the
// status of the replicas bound to it (noderestriction.go).
//
// A watch answers newline-delimited JSON api.WatchEvent values. It resumes
// from ?resourceVersion=N (the list's, or the last event's). When N has been
// compacted away it answers 410, or, when etcd tells so only once the
// stream has begun, ends the stream with an ERROR event carrying the 410.
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
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
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/pki"
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
	// NodeCA, when set, certifies nodes (their client certificates, which
	// the join token obtains once, and the agents' serving certificates)
	// and is what node client certificates must chain to. Without it no
	// node can join: the join token has nothing to obtain.
	NodeCA NodeCA
	// AgentClientCertificate, when set, is the API server's client
	// certificate (from the cluster CA, named api.APIServerClientName),
	// which it presents to node agents to fetch replicas' logs; without
	// it, or without NodeCA, the API serves no logs.
	AgentClientCertificate *tls.Certificate
	// GossipKey is the cluster's gossip key, which GET /v1/gossip/key
	// hands to nodes (by their certificate) and gateways; without it that
	// answers 404.
	GossipKey []byte
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
	// FunctionURL, when set, says where the gateway serves a function; it
	// fills FunctionStatus.URL in every answer about functions.
	FunctionURL func(api.Key) string
	// ResolveImage, when set, returns the digest a function's image names
	// now, which its new revision pins (api.RevisionSpec.ImageDigest). It
	// may block on a registry; an *api.Error refuses the deploy, any other
	// error leaves the revision unpinned. It is called from request
	// goroutines, concurrently.
	ResolveImage func(ctx context.Context, f *api.Function) (digest string, err error)
	// Load, when set, serves GET /v1/stats: the gateways' latest load per
	// revision.
	Load LoadSource
	// Limits are the server's quotas; a zero field takes its default
	// (DefaultLimits).
	Limits Limits
}

// LoadSource is the gateways' summed load per revision (store.GatewayLoad).
// It is called from request goroutines, concurrently, and reads etcd.
type LoadSource interface {
	Load(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error)
}

// NodeCA signs nodes' certificates and is the authority node client
// certificates chain to; package pki's NodeCA implements it. Its methods
// do not block and are called from request goroutines, concurrently.
type NodeCA interface {
	Sign(csr *x509.CertificateRequest, c pki.NodeCert, now time.Time) ([]byte, error)
	Certificate() *x509.Certificate
}

var _ NodeCA = (*pki.NodeCA)(nil)

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
	// nodeRoots holds the node CA, when there is one.
	nodeRoots *x509.CertPool
	// watches counts each principal's open watches.
	watches *watchCounter
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
	s := &Server{cfg: cfg, mux: http.NewServeMux(), metrics: m, watches: newWatchCounter(cfg.Limits.MaxWatchesPerPrincipal)}
	if cfg.NodeCA != nil {
		s.nodeRoots = x509.NewCertPool()
		s.nodeRoots.AddCert(cfg.NodeCA.Certificate())
	}
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
	c.Limits = c.Limits.withDefaults()
	errs = append(errs, c.Limits.validate()...)
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

// principal is who a request authenticated as.
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			// Anyone may ask /readyz: what etcd said (its addresses, its
			// members, its certificates' troubles) goes to the log only.
			s.cfg.Log.Warn("not ready", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": "the store does not answer; the server's log says why"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /metrics", auth.ResourceMetrics, auth.Read,
		promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP)
	s.handle("GET /v1/version", auth.ResourceVersion, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version, "api": api.Version})
	})
	// The gossip key, for the members of the cluster's gossip: nodes and
	// gateways (auth.ResourceGossipKey).
	s.handle("GET /v1/gossip/key", auth.ResourceGossipKey, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.GossipKey) == 0 {
			writeError(w, s.cfg.Log, api.NewError(http.StatusNotFound, api.ReasonNotFound, "this server has no gossip key"))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, api.GossipKey{Key: hex.EncodeToString(s.cfg.GossipKey)})
	})
	// whoami says who the caller is: its role, and its token or node.
	s.handle("GET /v1/whoami", auth.ResourceWhoami, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, principal(r.Context()))
	})

	registerKind(s, kindOps[api.Function]{
		validate: func(f *api.Function) error {
			api.SetDefaults(&f.Spec)
			if err := api.ValidateFunction(f); err != nil {
				return err
			}
			return s.cfg.Limits.functionLimits(f)
		},
		create:  s.createFunction,
		replace: s.replaceFunction,
		delete:  s.cfg.Store.DeleteFunction,
		show:    s.showFunctions,
		redact:  redactFunction,
	})
	registerKind(s, kindOps[api.PullSecret]{
		validate: api.ValidatePullSecret,
		create:   createOnly[api.PullSecret](s),
		replace:  replaceOnly[api.PullSecret](s),
		delete:   deleteOne[api.PullSecret](s),
		redact:   redactPullSecret,
		// A node reads those of the namespaces it runs replicas of.
		authorizeRead: s.nodeReadsPullSecrets,
	})
	registerKind(s, kindOps[api.Revision]{authorizeRead: s.nodeReadsRevision, redact: redactRevision, delete: s.deleteRevision})
	// Rollouts are the rollout controller's: read-only, but for a rollback.
	registerKind(s, kindOps[api.Rollout]{})
	registerKind(s, kindOps[api.Traffic]{
		validate: api.ValidateTraffic,
		replace:  s.replaceTraffic,
	})
	registerKind(s, kindOps[api.Scale]{
		validate: func(sc *api.Scale) error {
			if err := api.ValidateScale(sc); err != nil {
				return err
			}
			return s.cfg.Limits.scaleLimits(sc)
		},
		replace: s.keepStatus(store.UpdateScaleSpec),
	})
	registerKind(s, kindOps[api.Replica]{
		validate: validateReplica,
		// Replicas are made, bound and removed by the controllers; a
		// node reports only the status of its own (replicaStatus).
		create:  notByNodes(createOnly[api.Replica](s), "create replicas"),
		replace: notByNodes(replaceOnly[api.Replica](s), "replace replicas"),
		delete:  notByNodesDelete(deleteOne[api.Replica](s), "delete replicas"),
		status:  s.replicaStatus,
		filter:  replicaFilter,
	})
	registerKind(s, kindOps[api.Node]{
		validate: validateNode,
		create:   s.createNode,
		// A node's spec (subnet, cordon) is the control plane's, and its
		// removal the admin's: a node writes only its own status.
		replace: notByNodes(replaceOnly[api.Node](s), "replace nodes"),
		delete: notByNodesDelete(func(ctx context.Context, key api.Key, rv string) error {
			return s.cfg.Store.DeleteNode(ctx, key.Name, rv)
		}, "delete nodes"),
		status: s.nodeStatus,
		show:   s.showNodes,
	})
	s.tokenRoutes()
	s.activateRoutes()
	s.rollbackRoutes()
	s.statsRoutes()
	s.loadRoutes()
	s.certificateRoutes()
	s.heartbeatRoutes()
	s.logRoutes()
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
		stream := isWatch(r) || isFollow(r)
		defer func() {
			s.metrics.observe(resource, r.Method, sw.code, s.cfg.Clock.Since(start), stream)
		}()
		p, err := s.authenticate(r)
		if err != nil {
			if strings.HasPrefix(r.URL.Path, "/v2/") {
				// The distribution spec's challenge: docker and crane then
				// send their credentials, the password being a token.
				sw.Header().Set("WWW-Authenticate", `Basic realm="surge"`)
			}
			writeError(sw, s.cfg.Log, err)
			return
		}
		if !auth.Allowed(p, verb, resource) {
			hint := ""
			if p.Role == auth.RoleNode && p.Node == "" {
				hint = ": the join token only obtains a node's certificate (POST /v1/nodes/NAME/bootstrap), with which the node acts"
			}
			writeError(sw, s.cfg.Log, forbidden("%s may not %s %s%s", p.Name(), verbWord(verb), resource, hint))
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if isWatch(r) {
			release, err := s.watches.acquire(p)
			if err != nil {
				writeError(sw, s.cfg.Log, err)
				return
			}
			defer release()
		}
		if stream {
			open := s.metrics.watches.WithLabelValues(resource)
			open.Inc()
			defer open.Dec()
		}
		if p.ID != "" && stream {
			var stop func()
			r, stop = s.cutOnRevoke(r, p)
			defer stop()
		}
		h(sw, r)
	})
}

// forbidden is the 403 answer, saying what is refused.
func forbidden(format string, args ...any) *api.Error {
	return api.NewError(http.StatusForbidden, api.ReasonForbidden, format, args...)
}

func verbWord(v auth.Verb) string {
	if v == auth.Write {
		return "write"
	}
	return "read"
}

// authenticate finds who sent r: a node by its client certificate
// (nodeIdentity), or the holder of a bearer token; never both at once.
func (s *Server) authenticate(r *http.Request) (auth.Principal, error) {
	h := r.Header.Get("Authorization")
	node, hasCert, err := s.nodeIdentity(r)
	switch {
	case err != nil:
		return auth.Principal{}, err
	case hasCert && h != "":
		return auth.Principal{}, unauthorized("send a node's client certificate or a bearer token, not both")
	case hasCert:
		return node, nil
	}
	bearer, ok := strings.CutPrefix(h, "Bearer ")
	if registry := strings.HasPrefix(r.URL.Path, "/v2/"); registry && !ok {
		// docker login and crane send the token as a basic-auth password
		// (any user name), after the challenge unauthorized sets.
		if _, pass, basic := r.BasicAuth(); basic {
			bearer, ok = pass, true
		}
	}
	if !ok || bearer == "" {
		return auth.Principal{}, unauthorized("missing bearer token: send \"Authorization: Bearer TOKEN\" (the token is in your client config)")
	}
	tok, err := s.cfg.Tokens.Authenticate(r.Context(), strings.TrimSpace(bearer))
	if errors.Is(err, auth.ErrInvalidToken) {
		return auth.Principal{}, unauthorized("invalid or revoked token")
	}
	if err != nil {
		return auth.Principal{}, api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "cannot check the token now: %v", err)
	}
	return auth.TokenPrincipal(tok), nil
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
	watches  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_apiserver_requests_total",
			Help: "API requests by resource, method and status code.",
		}, []string{"resource", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_apiserver_request_duration_seconds",
			Help:    "API request latency by resource and method (watches and followed logs excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"resource", "method"}),
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_apiserver_watches",
			Help: "Watches and followed logs open on this server, by resource.",
		}, []string{"resource"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.watches} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register API metrics: %w", err)
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
