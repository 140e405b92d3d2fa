// Package gateway is Surge's data path: an HTTP reverse proxy on fasthttp
// that routes each request to a function's revision by traffic weight and
// to the least-loaded ready replica with room, queues requests when none
// has room (asking for a replica at once when a revision has none), retries
// what is safe, ejects replicas that refuse connections, passes WebSocket
// upgrades through, and reports per-revision load (for the autoscaler) and
// outcomes — requests, errors, a latency histogram (for the rollout
// controller's canaries) — every second. A revision tagged in its
// function's traffic also answers at its own host, TAG-NAME.DOMAIN.
//
// Routing state comes from RouteSources (the control-plane watch,
// ControlPlaneSource, and gossip, GossipSource) through Routes.Update into
// one copy-on-write snapshot that requests read without a lock.
//
// Run(ctx, Options) is the gateway role: it assembles a Gateway with its
// sources, activator and stats sink from one Options, and runs it. New and
// Gateway.Run are its parts, for embedding and tests. All of it reads time
// from one clock (see Deps.Clock).
//
// Files: config.go (Config), state.go (the sources' model and interfaces),
// routes.go (snapshot building), picker.go, endpoint.go (ejection),
// budget.go (retry budget and policy), queue.go, stats.go — the pure cores;
// proxy.go and upstream.go — the request path; clientconn.go,
// writewait.go and deadline.go — its connections' system calls and
// timers; clientaddr.go — what it believes of a client's address;
// upgrade.go — WebSocket tunnels; gateway.go — the server's life;
// run.go — the role's assembly; cpsource.go, gossipsource.go,
// activator.go and statssink.go — its links to the control plane and
// gossip.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// Deps are the gateway's collaborators. Only Sources is needed to route
// anything; every other field may be left zero.
type Deps struct {
	// Sources feed the routing state; Run runs each until it ends.
	Sources []RouteSource
	// Activator is asked for a replica when a request finds none.
	Activator Activator
	// Stats receives per-revision load every Config.StatsInterval.
	Stats StatsSink
	// Registerer receives the gateway's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Log receives operational events; nil discards them.
	Log *slog.Logger
	// AccessLog receives the access log, a JSON object per line, from one
	// goroutine (Config.AccessLog says which requests); nil writes none.
	AccessLog io.Writer
	// Clock is the gateway's one source of time; nil means the wall
	// clock. It times what the gateway waits for (stats windows, the
	// drain's delay and timeout, a queued request's wait, a WebSocket's
	// guard) and stamps what it measures (a request's start and end,
	// ejections, activations). Run gives the same Clock to the parts it
	// builds (the control-plane source's back-off, gossip).
	//
	// Socket deadlines are computed from it too, and the kernel applies
	// them on the wall clock, so they are exact only when the Clock is the
	// wall clock. A test that drives a clock.Fake gets deadlines on the
	// Fake's time: harmless for a test that does not depend on them, as
	// long as the Fake does not lag the wall clock (a deadline in the past
	// fires at once), so such a test starts its Fake at the wall time.
	// fasthttp's own deadlines (ReadTimeout, WriteTimeout, IdleTimeout)
	// are always on the wall clock.
	//
	// The wall clock's reading is shared: a request's start is fasthttp's
	// reading as the request began, which saves the request path a clock
	// read (tens of nanoseconds, more in a virtual machine).
	Clock clock.Clock
	// Listener, when set, is served instead of listening on Config.Addr.
	Listener net.Listener
	// TLSListener, when set, is served with TLS instead of listening on
	// Config.TLSAddr.
	TLSListener net.Listener
	// CertIssuer, when set, makes certificates for the gateway's domain
	// and namespaces that no file covers (see certs.go).
	CertIssuer CertIssuer
}

// Gateway is one gateway process's proxy.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	clock     clock.Clock
	sysClock  bool // clock is the wall clock: see requestStart
	epoch     time.Time
	routes    *Routes
	picker    Picker
	eject     ejectPolicy
	metrics   *metrics
	alog      *accessLog // nil: no access log
	activator Activator
	sink      StatsSink
	sources   []RouteSource
	listener  net.Listener
	srv       *fasthttp.Server
	// HTTPS: the certificates (nil without TLS), the server configuration,
	// the listener, and ":PORT" for redirects ("" for 443).
	certs       *certStore
	tlsConfig   *tls.Config
	tlsListener net.Listener
	httpsPort   string
	tunnels     tunnelSet // upgraded connections fasthttp handed over
	park        *parking  // idle connections' parking; nil: none
	ips         *ipConns  // connections per client address
	trusted     trustedNets
	// followUps are revisions whose demand grew since their last
	// activation: see Gateway.activate.
	followUps chan *revision

	draining  atomic.Bool
	drainOnce sync.Once
	drainCh   chan struct{} // closed when draining starts

	statsMu   sync.Mutex
	lastStats []RevisionStats
}

// New checks cfg and builds a gateway; Run serves it.
func New(cfg Config, deps Deps) (*Gateway, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:       cfg,
		log:       deps.Log,
		clock:     deps.Clock,
		activator: deps.Activator,
		sink:      deps.Stats,
		sources:   deps.Sources,
		listener:  deps.Listener,
		drainCh:   make(chan struct{}),
		followUps: make(chan *revision, 64),
		eject: ejectPolicy{
			after:      int32(cfg.EjectAfter),
			backoff:    backoff.Policy{Base: cfg.EjectBaseBackoff, Max: cfg.EjectMaxBackoff},
			maxPercent: cfg.MaxEjectedPercent,
		},
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.clock = clock.Or(g.clock)
	g.tlsListener = deps.TLSListener
	g.httpsPort = httpsPort(&cfg, deps.TLSListener)
	g.sysClock = g.clock == clock.Real()
	g.epoch = g.clock.Now()
	switch cfg.Policy {
	case PolicyLeast:
		g.picker = LeastLoaded{}
	default:
		g.picker = P2C{}
	}
	if deps.Registerer != nil {
		m, err := newMetrics(deps.Registerer)
		if err != nil {
			return nil, err
		}
		g.metrics = m
	}
	g.alog = newAccessLog(cfg.AccessLog, cfg.AccessLogSample, cfg.AccessLogBuffer, deps.AccessLog)
	if g.alog != nil && g.metrics != nil {
		g.alog.dropped = g.metrics.accessDropped
	}
	hooks := routeHooks{
		hostClient: func(addr string, limit int64) *fasthttp.HostClient { return newHostClient(addr, limit, &g.cfg) },
	}
	if g.metrics != nil {
		hooks.revisionAdded = func(r *revision) {
			r.m = g.metrics.forRevision(r)
			q := r.m.queue
			r.queue.onChange = func(n int) { q.Set(float64(n)) }
		}
		hooks.revisionRemoved = func(r *revision) { g.metrics.forget(r) }
	}
	var room *queueRoom
	if cfg.MaxQueued > 0 {
		room = &queueRoom{max: int64(cfg.MaxQueued)}
	}
	g.routes = newRoutes(routeConfig{
		defaultTimeout: cfg.DefaultTimeout,
		queueDepth:     cfg.QueueDepth,
		maxPerEndpoint: int64(cfg.MaxConnsPerEndpoint),
		room:           room,
		budget:         newBudgetConfig(cfg.RetryBudgetRatio, cfg.RetryBudgetBurst),
	}, hooks)
	g.srv = &fasthttp.Server{
		Handler:            g.handle,
		ErrorHandler:       g.parseError,
		Logger:             fasthttpLogger{g.log},
		Concurrency:        cfg.MaxConns,
		ReadBufferSize:     cfg.MaxHeaderBytes,
		WriteBufferSize:    16 << 10,
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: cfg.MaxRequestBodyBytes,
		StreamRequestBody:  true,
		// An idle keep-alive connection gives its 16 KiB write buffer
		// back to the pool after each answer (its read buffer stays: a
		// streamed body may still be in it, until it is parked: see
		// park.go), for no allocation and no throughput we could measure.
		ReduceMemoryUsage:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		NoDefaultDate:                true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
	}
	g.trusted = trustedNets(cfg.TrustedProxies)
	g.ips = newIPConns(cfg.MaxConnsPerIP, g.trusted)
	haveCerts := cfg.TLSCertFile != "" || cfg.TLSDir != "" || deps.CertIssuer != nil
	switch tlsOn := cfg.TLSAddr != "" || deps.TLSListener != nil; {
	case tlsOn && !haveCerts:
		return nil, fmt.Errorf("%w: TLSAddr %q: no certificates: set TLSCertFile and TLSKeyFile, or TLSDir", ErrInvalidConfig, cfg.TLSAddr)
	case !tlsOn && haveCerts:
		return nil, fmt.Errorf("%w: certificates but no TLSAddr: set it to where to serve HTTPS, such as :8443", ErrInvalidConfig)
	case tlsOn:
		g.certs = newCertStore(&cfg, deps.CertIssuer, g.routes, g.clock, g.log)
		g.tlsConfig = newTLSConfig(g.certs)
		if deps.Registerer != nil {
			m, err := newTLSMetrics(deps.Registerer)
			if err != nil {
				return nil, err
			}
			g.certs.m, g.tlsConfig.VerifyConnection = m, m.handshake
		}
	}
	g.park = newParking(cfg.ParkIdleAfter, cfg.IdleTimeout, cfg.MaxConns, g.clock, g.log, g.srv.ServeConn)
	if g.park != nil && deps.Registerer != nil {
		if err := registerParking(deps.Registerer, g.park); err != nil {
			g.park.poll.close() // never run: nothing else to stop
			return nil, err
		}
	}
	return g, nil
}

// httpsPort is ":PORT" of the gateway's HTTPS as redirects name it, ""
// for 443.
func httpsPort(cfg *Config, ln net.Listener) string {
	port := ""
	switch {
	case cfg.HTTPSRedirectPort != 0:
		port = strconv.Itoa(cfg.HTTPSRedirectPort)
	case ln != nil:
		_, port, _ = net.SplitHostPort(ln.Addr().String())
	case cfg.TLSAddr != "":
		_, port, _ = net.SplitHostPort(cfg.TLSAddr)
	}
	if port == "" || port == "443" {
		return ""
	}
	return ":" + port
}

// Routes is the routing state, for sources the caller runs itself and
// for tests.
func (g *Gateway) Routes() *Routes { return g.routes }

// Handler is the gateway's request handler, for embedding and tests.
func (g *Gateway) Handler() fasthttp.RequestHandler { return g.handle }

// handle serves a request, and while the gateway drains asks the client
// to close its connection after the answer: a keep-alive client that
// went on sending would otherwise be cut off by the listener's close at
// the end of DrainDelay, with a request written on a connection the drain
// closes as idle (RFC 9112 §9.6). A WebSocket's 101 keeps its connection.
func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	g.serve(ctx)
	switch {
	case ctx.Hijacked():
	case g.draining.Load():
		ctx.SetConnectionClose()
	case noBody(&ctx.Request.Header):
		idleNext(ctx.Conn()) // a body read whole tells it in serve
	}
}

// noBody reports whether a request has no body: no Content-Length (-2,
// fasthttp's "identity") or a zero one, and no chunked Transfer-Encoding.
func noBody(h *fasthttp.RequestHeader) bool {
	cl := h.ContentLength()
	return cl == 0 || cl == -2
}

// Ready reports whether the gateway takes traffic (false once draining).
func (g *Gateway) Ready() bool { return !g.draining.Load() }

// Stats returns the last completed stats window (nil before the first).
func (g *Gateway) Stats() []RevisionStats {
	g.statsMu.Lock()
	defer g.statsMu.Unlock()
	return g.lastStats
}

func (g *Gateway) micros(t time.Time) int64 { return t.Sub(g.epoch).Microseconds() }

// requestStart is when the request of ctx began, on the gateway's Clock:
// fasthttp's reading as the request began when the Clock is the wall
// clock (see Deps.Clock), else the Clock's now.
func (g *Gateway) requestStart(ctx *fasthttp.RequestCtx) time.Time {
	if g.sysClock {
		if t := ctx.Time(); !t.IsZero() {
			return t
		}
	}
	return g.clock.Now()
}

// Run serves until ctx ends, then drains: readiness turns false, the
// gateway keeps serving for DrainDelay, stops accepting, lets in-flight
// requests and open WebSockets finish (up to DrainTimeout, for both
// together) while closing idle keep-alive connections, closes the
// WebSockets still open, and returns once everything it started has
// exited. It returns nil after a drain that ctx started, or the error that
// ended it. Call it once.
func (g *Gateway) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil && !g.draining.Load() { // a return before the drain closed them
			for _, ln := range []net.Listener{g.listener, g.tlsListener} {
				if ln != nil {
					_ = ln.Close()
				}
			}
			if g.park != nil {
				g.park.poll.close() // its loop never ran
			}
		}
	}()
	if g.certs != nil {
		if err := g.certs.load(ctx); err != nil {
			return err
		}
		if g.tlsListener == nil {
			if g.tlsListener, err = net.Listen("tcp", g.cfg.TLSAddr); err != nil {
				return fmt.Errorf("gateway listen on %s: %w", g.cfg.TLSAddr, err)
			}
		}
	}
	if g.listener == nil {
		if g.listener, err = net.Listen("tcp", g.cfg.Addr); err != nil {
			return fmt.Errorf("gateway listen on %s: %w", g.cfg.Addr, err)
		}
	}
	eg, ectx := errgroup.WithContext(ctx)
	serve := func(ln, serveLn net.Listener) {
		eg.Go(func() error {
			if err := g.srv.Serve(serveLn); err != nil && !g.draining.Load() {
				return fmt.Errorf("gateway serve on %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	serve(g.listener, clientListener{Listener: g.listener, park: g.park, ips: g.ips, refusal: tooManyConnsAnswer})
	if g.certs != nil {
		// No refusal written on the TLS listener: a plain HTTP answer in a
		// TLS connection is garbage to its client; it is closed.
		serve(g.tlsListener, tlsListener{Listener: clientListener{Listener: g.tlsListener, park: g.park, ips: g.ips}, config: g.tlsConfig})
		eg.Go(func() error { g.certs.run(ectx); return nil })
	}
	for _, src := range g.sources {
		eg.Go(func() error {
			if err := src.Run(ectx, g.routes); err != nil && ectx.Err() == nil {
				return fmt.Errorf("gateway route source: %w", err)
			}
			return nil
		})
	}
	eg.Go(func() error { g.statsLoop(ectx); return nil })
	eg.Go(func() error { g.followUpLoop(ectx); return nil })
	if g.park != nil {
		eg.Go(func() error { g.park.run(); return nil })
	}
	eg.Go(func() error {
		<-ectx.Done()
		return g.drain()
	})
	if g.alog == nil {
		return eg.Wait()
	}
	// The access log's writer outlives the drain, whose requests it logs.
	stopLog, logDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(logDone)
		g.alog.run(stopLog, func(err error) { g.log.Warn("access log write failed; dropping records until it works", "err", err) })
	}()
	err = eg.Wait()
	close(stopLog)
	<-logDone
	return err
}

// drain stops the gateway gracefully; see Run.
func (g *Gateway) drain() error {
	g.drainOnce.Do(func() {
		g.draining.Store(true)
		close(g.drainCh)
	})
	clock.Sleep(context.Background(), g.clock, g.cfg.DrainDelay)
	ctx, cancel := clock.WithTimeout(context.Background(), g.clock, g.cfg.DrainTimeout)
	defer cancel()
	if g.park != nil {
		g.park.stop() // closes the parked connections, idle all
	}
	err := g.srv.ShutdownWithContext(ctx)
	if g.park != nil && err == nil {
		// Every connection fasthttp served, woken ones among them, has
		// ended: their goroutines are returning. (After a timeout they are
		// left, as fasthttp leaves its workers.)
		g.park.wait()
	}
	// Shutdown does nothing if Serve has not registered the listener yet
	// (ctx ended right away); closing it ourselves ends Serve either way.
	_ = g.listener.Close()
	if g.tlsListener != nil {
		_ = g.tlsListener.Close()
	}
	g.tunnels.drain(ctx)
	g.routes.closeIdle()
	if err != nil {
		return fmt.Errorf("gateway drain: %w", err)
	}
	return nil
}

func (g *Gateway) statsLoop(ctx context.Context) {
	c := newStatsCollector(g.epoch)
	t := g.clock.NewTicker(g.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		st := c.collect(g.clock.Now(), g.routes.Load().revisions)
		g.statsMu.Lock()
		g.lastStats = st
		g.statsMu.Unlock()
		if g.sink != nil {
			g.sink.ReportStats(append([]RevisionStats(nil), st...))
		}
	}
}

// parseError answers requests fasthttp could not parse, with the status
// that names the problem, as JSON like every other gateway answer.
func (g *Gateway) parseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		g.rejectUnrouted(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		g.rejectUnrouted(ctx, fasthttp.StatusRequestEntityTooLarge, msgBodyTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		g.rejectUnrouted(ctx, fasthttp.StatusRequestTimeout, "request not received in time")
	default:
		g.rejectUnrouted(ctx, fasthttp.StatusBadRequest, "malformed request")
	}
}

// closeIdle closes every replica's idle pooled connections.
func (r *Routes) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ep := range r.eps {
		if ep.hc != nil {
			ep.hc.CloseIdleConnections()
		}
	}
}

// fasthttpLogger sends fasthttp's own messages to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}
