package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config steers one gateway. Make it with DefaultConfig and change what you
// need; New fills zero values from the defaults and reports every bad field.
type Config struct {
	// Addr is where the gateway listens when Run is given no listener.
	Addr string
	// Domain is the suffix of routed hosts: NAME.DOMAIN and
	// NAME.NAMESPACE.DOMAIN. Lowercase, without a leading dot.
	Domain string
	// PathRouting routes /fn/NAME/ and /fn/NAME.NAMESPACE/ on any other
	// host too (DefaultConfig: on), for callers without a name for each
	// function: replicas calling another function through their node's
	// gateway, a first curl. Its cost: every function so routed shares one
	// web origin, the gateway's, so in a browser one function's page reads
	// another's cookies and answers and can register a service worker
	// over all of them. Host routing gives each function an origin of its
	// own; turn this off where browsers visit functions of different
	// trust. Off (the zero value), only hosts under Domain are routed.
	PathRouting bool
	// HealthPath answers 200 while the gateway is ready and 503 while it
	// drains, on any host, for load balancer probes. Empty turns it off.
	HealthPath string

	// ReadTimeout bounds reading a request's header (and a body the gateway
	// does not stream). Longer tolerates slow clients; shorter resists
	// slowloris-style connection hoarding.
	ReadTimeout time.Duration
	// RequestBodyTimeout bounds how long a request body streamed to a
	// replica may take to arrive, from when the request took the
	// replica's slot (under its concurrency limit): past it the gateway
	// answers 408, closes the connection and frees the slot, so a client
	// dribbling a body cannot hold a replica. The function's own time
	// limit still applies when it is shorter. Longer tolerates slow
	// uploads (30 s takes MaxRequestBodyBytes' 10 MiB at 2.8 Mbit/s);
	// shorter frees slots sooner.
	RequestBodyTimeout time.Duration
	// WriteTimeout bounds writing an answer the gateway makes itself (404,
	// 503, ...) or holds whole (a small proxied answer that came in one
	// piece; the function's total limit when that comes first). Streamed
	// answers are bounded by the function's total limit instead, so a
	// long stream is not cut.
	WriteTimeout time.Duration
	// IdleTimeout closes a client keep-alive connection that sends nothing
	// for this long. Longer saves handshakes; shorter saves file descriptors.
	IdleTimeout time.Duration
	// ParkIdleAfter parks a keep-alive connection that has waited this long
	// (to twice as long) for its next request: it gives back its goroutine,
	// its request state and its read buffer, and waits in an epoll set,
	// costing about a kibibyte instead of a dozen (B8), until its next
	// request. Shorter saves memory sooner; longer spares connections
	// with a few requests a second the few microseconds a wake costs.
	// Negative never parks.
	ParkIdleAfter time.Duration
	// MaxHeaderBytes limits a request's start line and header; more is
	// answered 431. It is also the per-connection read buffer, so it costs
	// memory per open connection.
	MaxHeaderBytes int
	// MaxRequestBodyBytes limits a request body; more is answered 413.
	MaxRequestBodyBytes int
	// ReplayBodyBytes: request bodies of known length up to this size are
	// read before the first attempt, so they can be sent again on a retry.
	// Larger ones (and chunked ones) are streamed and retried only when not
	// a byte of them was read. Costs up to this much memory per request.
	ReplayBodyBytes int
	// MaxConnsPerIP caps the open connections of one client address,
	// parked ones and WebSockets among them; one more is answered 429 and
	// closed as it comes (over TLS, closed). IPv6 addresses count by /64.
	// Clients behind one NAT share it; TrustedProxies are not capped.
	// DefaultConfig's 1024 is far above what a browser opens (6 per
	// host), and keeps one host from taking more than 1/256 of MaxConns.
	// 0 is no cap: for load generators on one machine (benchmarks).
	MaxConnsPerIP int
	// MaxConns caps concurrent client connections in total, parked ones
	// among them (more are closed as they come), and, counted apart, open
	// WebSockets: fasthttp stops counting a connection once the gateway
	// takes it over for a tunnel.
	MaxConns int
	// TrustedProxies are the networks of the proxies in front of the
	// gateway (load balancers) whose word on the client it takes: from
	// them, Forwarded and X-Real-IP pass on, X-Forwarded-For is appended
	// to, X-Forwarded-Proto and -Host kept, and connections are not
	// capped per address. From anyone else, Forwarded and X-Real-IP are
	// removed and X-Forwarded-* replaced with what the gateway sees, so
	// no client can forge its address to a function. Empty by default.
	TrustedProxies []netip.Prefix

	// DialTimeout bounds connecting to a replica. Short finds dead replicas
	// fast; too short fails under load.
	DialTimeout time.Duration
	// ResponseStartTimeout bounds the wait for a replica's response header
	// after the request was sent; 504 after. 0 means the total limit only.
	ResponseStartTimeout time.Duration
	// IdleStreamTimeout bounds the silence between two reads of a response
	// body (an SSE stream with no events), and of a WebSocket (no byte
	// either way); the stream is cut after it.
	IdleStreamTimeout time.Duration
	// DefaultTimeout is a function's total limit when its spec names none.
	// It bounds a WebSocket's whole life too.
	DefaultTimeout time.Duration
	// MaxConnsPerEndpoint caps connections to one replica, and so its
	// requests in flight: beyond it (or the function's concurrency limit,
	// when lower) requests wait in the revision's queue.
	MaxConnsPerEndpoint int
	// UpstreamIdleConnTimeout closes pooled replica connections idle longer.
	UpstreamIdleConnTimeout time.Duration
	// UpstreamBufferBytes is the read and write buffer per replica
	// connection; it also limits a replica's response header size.
	UpstreamBufferBytes int

	// QueueDepth is how many requests may wait per revision for a replica
	// with room (a burst from zero, or more than the replicas hold); more
	// are answered 503 with Retry-After. A function's spec.queueDepth
	// overrides it. Large by default, as Knative's activator's 10,000: a
	// waiting request costs a few KiB (B10 prints the figure), and every
	// one turned away is a failed request.
	QueueDepth int
	// MaxQueued bounds the requests waiting in all revisions' queues
	// together: past it the gateway is out of room, and answers 503 with
	// Retry-After. 0 means no bound but each revision's; gateway.Run
	// (surge gateway, surge up) derives one from the memory the process may
	// use (see MemoryQueueBound).
	MaxQueued int
	// MaxQueueWait caps the wait in the queue below the request's own
	// deadline; 0 means the deadline only (cold starts may take a while).
	MaxQueueWait time.Duration
	// ActivationInterval spaces the "revision has no replica" calls to the
	// Activator for one revision.
	ActivationInterval time.Duration

	// RetryBudgetRatio is the share of requests that may be retried, per
	// revision (0.2 = 20%). Higher masks more failures; lower protects a
	// struggling revision from retry storms.
	RetryBudgetRatio float64
	// RetryBudgetBurst is how many retries a revision may spend before the
	// ratio has earned any (after start, or after a quiet period).
	RetryBudgetBurst int
	// MaxRetries is the most retries of one request.
	MaxRetries int

	// EjectAfter failures in a row eject a replica: 5xx answers, failed
	// connections, connections reset or cut before the answer, timeouts
	// (5, Envoy's consecutive_5xx). A refused connection ejects at once,
	// until the replica is reported Ready again.
	EjectAfter int
	// EjectBaseBackoff is the first ejection; each further one doubles it.
	EjectBaseBackoff time.Duration
	// EjectMaxBackoff caps an ejection.
	EjectMaxBackoff time.Duration
	// MaxEjectedPercent of a revision's replicas may be ejected at once, so
	// a network blip does not take a whole revision out.
	MaxEjectedPercent int

	// Policy picks a replica among a revision's: "p2c" (power of two
	// choices, least in-flight) or "least" (scan all; exact, O(n)).
	Policy string

	// StatsInterval is the autoscaler's reporting window.
	StatsInterval time.Duration
	// DrainDelay keeps serving after readiness turns false, so load
	// balancers stop sending before the listener closes.
	DrainDelay time.Duration
	// DrainTimeout bounds the wait for in-flight requests at shutdown.
	DrainTimeout time.Duration

	// AccessLog says which requests the access log records (Deps.AccessLog
	// is where it writes): off, sampled (one in AccessLogSample, and every
	// 5xx) or full. Recording costs the request path a copy of its method,
	// host and path and no allocation; writing is another goroutine's.
	AccessLog AccessLogMode
	// AccessLogSample is the sampled mode's one-in-N.
	AccessLogSample int
	// AccessLogBuffer is how many records may wait for the writer; more
	// are dropped (surge_gateway_access_log_dropped_total) rather than
	// slow requests down. Each costs about half a kilobyte.
	AccessLogBuffer int
	// TLSAddr is where the gateway serves HTTPS, with the certificates of
	// TLSCertFile, TLSDir and Deps.CertIssuer (see certs.go); "" serves
	// none.
	TLSAddr string
	// TLSCertFile and TLSKeyFile are a PEM certificate (its chain after
	// it) and its key: the default certificate, for a client whose name
	// (SNI) no other certificate matches. Both or neither.
	TLSCertFile, TLSKeyFile string
	// TLSDir holds certificates chosen by SNI: each NAME.crt with its
	// NAME.key beside it.
	TLSDir string
	// TLSReloadInterval is how often the certificate files are looked at
	// for changes, and issued certificates for renewal. Shorter serves a
	// renewed certificate sooner, for a few stat calls more.
	TLSReloadInterval time.Duration
	// HTTPSRedirect answers every plain HTTP request (but HealthPath's)
	// with a redirect to the same URL over HTTPS; a function's
	// spec.httpsRedirect does it for that function alone. Function calls
	// through the gateway's plain port are redirected too.
	HTTPSRedirect bool
	// HTTPSRedirectPort is the port redirects name: 0 for TLSAddr's (and
	// none for 443). Set it when clients reach HTTPS at another port than
	// the gateway's (a load balancer's 443).
	HTTPSRedirectPort int
}

// DefaultConfig returns the configuration `surge up` runs with.
func DefaultConfig() Config {
	return Config{
		Addr:                    ":8080",
		Domain:                  "surge.localhost",
		PathRouting:             true,
		HealthPath:              "/.surge/ready",
		ReadTimeout:             30 * time.Second,
		RequestBodyTimeout:      30 * time.Second,
		WriteTimeout:            30 * time.Second,
		IdleTimeout:             90 * time.Second,
		ParkIdleAfter:           50 * time.Millisecond,
		MaxHeaderBytes:          16 << 10,
		MaxRequestBodyBytes:     10 << 20,
		ReplayBodyBytes:         64 << 10,
		MaxConnsPerIP:           1024,
		MaxConns:                256 * 1024,
		DialTimeout:             2 * time.Second,
		ResponseStartTimeout:    0,
		IdleStreamTimeout:       5 * time.Minute,
		DefaultTimeout:          5 * time.Minute,
		MaxConnsPerEndpoint:     1024,
		UpstreamIdleConnTimeout: 60 * time.Second,
		UpstreamBufferBytes:     16 << 10,
		QueueDepth:              10_000,
		MaxQueued:               0,
		MaxQueueWait:            0,
		ActivationInterval:      time.Second,
		RetryBudgetRatio:        0.2,
		RetryBudgetBurst:        10,
		MaxRetries:              2,
		EjectAfter:              5,
		EjectBaseBackoff:        time.Second,
		EjectMaxBackoff:         30 * time.Second,
		MaxEjectedPercent:       50,
		Policy:                  PolicyP2C,
		StatsInterval:           time.Second,
		DrainDelay:              0,
		DrainTimeout:            30 * time.Second,
		AccessLog:               AccessLogOff,
		AccessLogSample:         100,
		AccessLogBuffer:         4096,
		TLSReloadInterval:       time.Second,
	}
}

// Policies for Config.Policy.
const (
	PolicyP2C   = "p2c"
	PolicyLeast = "least"
)

// ErrInvalidConfig is matched by every error Config.Validate and
// Options.Validate return.
var ErrInvalidConfig = errors.New("gateway: invalid config")

// withDefaults returns a copy of c with zero values taken from DefaultConfig.
// Fields where zero is meaningful (MaxConnsPerIP, ResponseStartTimeout,
// MaxQueued, MaxQueueWait, DrainDelay, TrustedProxies, PathRouting,
// HealthPath, the TLS files and address, HTTPSRedirect and its port) are
// kept.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.Domain == "" {
		c.Domain = d.Domain
	}
	c.Domain = strings.TrimPrefix(strings.ToLower(c.Domain), ".")
	setDur(&c.ReadTimeout, d.ReadTimeout)
	setDur(&c.RequestBodyTimeout, d.RequestBodyTimeout)
	setDur(&c.WriteTimeout, d.WriteTimeout)
	setDur(&c.IdleTimeout, d.IdleTimeout)
	setDur(&c.ParkIdleAfter, d.ParkIdleAfter)
	setInt(&c.MaxHeaderBytes, d.MaxHeaderBytes)
	setInt(&c.MaxRequestBodyBytes, d.MaxRequestBodyBytes)
	setInt(&c.ReplayBodyBytes, d.ReplayBodyBytes)
	setInt(&c.MaxConns, d.MaxConns)
	setDur(&c.DialTimeout, d.DialTimeout)
	setDur(&c.IdleStreamTimeout, d.IdleStreamTimeout)
	setDur(&c.DefaultTimeout, d.DefaultTimeout)
	setInt(&c.MaxConnsPerEndpoint, d.MaxConnsPerEndpoint)
	setDur(&c.UpstreamIdleConnTimeout, d.UpstreamIdleConnTimeout)
	setInt(&c.UpstreamBufferBytes, d.UpstreamBufferBytes)
	setInt(&c.QueueDepth, d.QueueDepth)
	if c.AccessLog == "" {
		c.AccessLog = d.AccessLog
	}
	setInt(&c.AccessLogSample, d.AccessLogSample)
	setInt(&c.AccessLogBuffer, d.AccessLogBuffer)
	setDur(&c.ActivationInterval, d.ActivationInterval)
	if c.RetryBudgetRatio == 0 {
		c.RetryBudgetRatio = d.RetryBudgetRatio
	}
	setInt(&c.RetryBudgetBurst, d.RetryBudgetBurst)
	setInt(&c.EjectAfter, d.EjectAfter)
	setDur(&c.EjectBaseBackoff, d.EjectBaseBackoff)
	setDur(&c.EjectMaxBackoff, d.EjectMaxBackoff)
	setInt(&c.MaxEjectedPercent, d.MaxEjectedPercent)
	if c.Policy == "" {
		c.Policy = d.Policy
	}
	setDur(&c.StatsInterval, d.StatsInterval)
	setDur(&c.DrainTimeout, d.DrainTimeout)
	setDur(&c.TLSReloadInterval, d.TLSReloadInterval)
	return c
}

// Validate reports every bad field at once, each with its name and value.
// MaxRetries 0 is valid (no retries); negative values are not.
func (c Config) Validate() error {
	errs := c.problems("")
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// problems is every bad field of c, each named (after prefix) with its
// value.
func (c Config) problems(prefix string) []error {
	var errs []error
	bad := func(field string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s%s = %v: %s", prefix, field, v, why))
	}
	pos := func(field string, v time.Duration) {
		if v <= 0 {
			bad(field, v, "must be positive")
		}
	}
	nonNeg := func(field string, v time.Duration) {
		if v < 0 {
			bad(field, v, "must not be negative")
		}
	}
	if c.Domain == "" || strings.ContainsAny(c.Domain, "/: ") {
		bad("Domain", c.Domain, "must be a DNS suffix such as surge.localhost")
	}
	if c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/") {
		bad("HealthPath", c.HealthPath, "must start with /")
	}
	pos("ReadTimeout", c.ReadTimeout)
	pos("RequestBodyTimeout", c.RequestBodyTimeout)
	pos("WriteTimeout", c.WriteTimeout)
	pos("IdleTimeout", c.IdleTimeout)
	if c.MaxHeaderBytes < 1024 {
		bad("MaxHeaderBytes", c.MaxHeaderBytes, "must be at least 1024")
	}
	if c.MaxRequestBodyBytes <= 0 {
		bad("MaxRequestBodyBytes", c.MaxRequestBodyBytes, "must be positive")
	}
	if c.ReplayBodyBytes < 0 || c.ReplayBodyBytes > c.MaxRequestBodyBytes {
		bad("ReplayBodyBytes", c.ReplayBodyBytes, "must be between 0 and MaxRequestBodyBytes")
	}
	if c.MaxConnsPerIP < 0 {
		bad("MaxConnsPerIP", c.MaxConnsPerIP, "must not be negative")
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() {
			bad(fmt.Sprintf("TrustedProxies[%d]", i), p, "must be a network such as 10.0.0.0/8")
		}
	}
	if c.MaxConns <= 0 {
		bad("MaxConns", c.MaxConns, "must be positive")
	}
	pos("DialTimeout", c.DialTimeout)
	if _, err := ParseAccessLogMode(string(c.AccessLog)); err != nil {
		bad("AccessLog", c.AccessLog, "must be off, sampled or full")
	}
	if c.AccessLogSample < 1 {
		bad("AccessLogSample", c.AccessLogSample, "must be at least 1")
	}
	if c.AccessLogBuffer < 1 || c.AccessLogBuffer > 1<<20 {
		bad("AccessLogBuffer", c.AccessLogBuffer, "must be between 1 and 1048576")
	}
	nonNeg("ResponseStartTimeout", c.ResponseStartTimeout)
	pos("IdleStreamTimeout", c.IdleStreamTimeout)
	pos("DefaultTimeout", c.DefaultTimeout)
	if c.MaxConnsPerEndpoint <= 0 {
		bad("MaxConnsPerEndpoint", c.MaxConnsPerEndpoint, "must be positive")
	}
	pos("UpstreamIdleConnTimeout", c.UpstreamIdleConnTimeout)
	if c.UpstreamBufferBytes < 1024 {
		bad("UpstreamBufferBytes", c.UpstreamBufferBytes, "must be at least 1024")
	}
	if c.QueueDepth < 0 {
		bad("QueueDepth", c.QueueDepth, "must not be negative")
	}
	if c.MaxQueued < 0 {
		bad("MaxQueued", c.MaxQueued, "must not be negative")
	}
	nonNeg("MaxQueueWait", c.MaxQueueWait)
	pos("ActivationInterval", c.ActivationInterval)
	if c.RetryBudgetRatio < 0 || c.RetryBudgetRatio > 1 {
		bad("RetryBudgetRatio", c.RetryBudgetRatio, "must be between 0 and 1")
	}
	if c.RetryBudgetBurst < 0 {
		bad("RetryBudgetBurst", c.RetryBudgetBurst, "must not be negative")
	}
	if c.MaxRetries < 0 || c.MaxRetries > 10 {
		bad("MaxRetries", c.MaxRetries, "must be between 0 and 10")
	}
	if c.EjectAfter <= 0 {
		bad("EjectAfter", c.EjectAfter, "must be positive")
	}
	pos("EjectBaseBackoff", c.EjectBaseBackoff)
	if c.EjectMaxBackoff < c.EjectBaseBackoff {
		bad("EjectMaxBackoff", c.EjectMaxBackoff, "must be at least EjectBaseBackoff")
	}
	if c.MaxEjectedPercent < 0 || c.MaxEjectedPercent > 100 {
		bad("MaxEjectedPercent", c.MaxEjectedPercent, "must be between 0 and 100")
	}
	if c.Policy != PolicyP2C && c.Policy != PolicyLeast {
		bad("Policy", c.Policy, `must be "p2c" or "least"`)
	}
	pos("StatsInterval", c.StatsInterval)
	nonNeg("DrainDelay", c.DrainDelay)
	pos("DrainTimeout", c.DrainTimeout)
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLSCertFile", fmt.Sprintf("%q with TLSKeyFile %q", c.TLSCertFile, c.TLSKeyFile), "give both or neither")
	}
	pos("TLSReloadInterval", c.TLSReloadInterval)
	if c.HTTPSRedirectPort < 0 || c.HTTPSRedirectPort > 65535 {
		bad("HTTPSRedirectPort", c.HTTPSRedirectPort, "must be between 0 and 65535")
	}
	return errs
}
