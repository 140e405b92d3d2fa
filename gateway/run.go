package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// Options are one gateway process: Run builds the proxy and its parts
// from them (the control-plane watch, gossip when GossipSeeds are set, the
// activator and the stats sink) and runs them. Make them with
// DefaultOptions.
type Options struct {
	// Config steers the proxy. Zero fields take DefaultConfig's values,
	// except where zero means something (see Config).
	Config Config
	// API is the gateway's identity at the API server: its URL, its CA and
	// a gateway-role token, which may read routes and write activations
	// and stats.
	API client.Config
	// Name names this gateway in its stats reports (the autoscaler keeps
	// one window per name) and, after "gw-", as a gossip member. Default:
	// the host name and Config.Addr.
	Name string

	// GossipSeeds, when set, make the gateway a member of the cluster's
	// gossip, joining these members (see gossip.Options.Seeds): there it
	// learns that a replica is ready, or that a node died, at once rather
	// than through etcd. It gets the gossip key from the API with its
	// token. None: the gateway learns endpoints from the API alone.
	GossipSeeds []string
	// GossipAddr is where the gateway gossips, HOST:PORT with an IP host
	// (port 0 picks one). Used only with GossipSeeds.
	GossipAddr string

	// Registerer receives the gateway's metrics; nil registers none.
	Registerer prometheus.Registerer
	// MetricsURL is where the gateway's metrics are scraped
	// (http://HOST:PORT/metrics), sent with its stats for discovery (GET
	// /v1/sd/prometheus); the API server puts the report's source address
	// in place of a wildcard host, and takes no host but that one or
	// loopback. Empty reports none.
	MetricsURL string
	// Log receives operational events; nil discards them.
	Log *slog.Logger
	// AccessLog receives the access log (see Deps.AccessLog); nil writes
	// none.
	AccessLog io.Writer
	// Clock is the gateway's one source of time, gossip's too (see
	// Deps.Clock); nil means the wall clock.
	Clock clock.Clock
	// Listener, when set, is served instead of listening on Config.Addr.
	// Run closes it.
	Listener net.Listener
	// TLSListener, when set, is served with TLS instead of listening on
	// Config.TLSAddr. Run closes it.
	TLSListener net.Listener
	// CertIssuer, when set, makes the certificates of the gateway's domain
	// and namespaces that no file covers (`surge up`: its gateway CA).
	CertIssuer CertIssuer
}

// DefaultOptions returns the options `surge gateway` starts from: the
// default Config and gossip address, and no API identity yet.
func DefaultOptions() Options {
	return Options{Config: DefaultConfig(), GossipAddr: "0.0.0.0:7947"}
}

// withDefaults returns a copy of o with every default filled in: the one
// place they are applied.
func (o Options) withDefaults() Options {
	o.Config = o.Config.withDefaults()
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = strings.NewReplacer("[", "", "]", "", ":", "-").Replace(host + "_" + o.Config.Addr)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Clock = clock.Or(o.Clock)
	return o
}

// Validate reports every bad field of o at once, each with its name and
// value, after filling defaults as Run does.
func (o Options) Validate() error {
	o = o.withDefaults()
	errs := o.Config.problems("Config.")
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u, err := url.Parse(o.API.Server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("API.Server %q is not an API URL like https://127.0.0.1:7070", o.API.Server)
	}
	if o.API.Token == "" {
		add("API.Token is empty: want the gateway token that `surge server` prints")
	}
	if !validName(o.Name) {
		add("Name %q must be 1-128 letters, digits, '-', '_', '.' or ':', starting with a letter or digit", o.Name)
	}
	if len(o.GossipSeeds) > 0 && !validGossipAddr(o.GossipAddr) {
		add("GossipAddr %q is not HOST:PORT with an IP host, such as 0.0.0.0:7947", o.GossipAddr)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// queuedRequestBytes is about what one waiting request costs the gateway:
// its client connection's buffers and fasthttp's state, its exchange, and
// its goroutine's stack. B10 prints the measured figure.
const queuedRequestBytes = 32 << 10

// memoryQueueBound is Config.MaxQueued when it is left 0: a quarter of
// the memory this process may use (its cgroup's memory.max, else the
// machine's MemTotal) in waiting requests, and never fewer than one
// revision's queueDepth. 0 (no bound) when neither can be read.
func memoryQueueBound(queueDepth int) int {
	limit := cgroupMemoryMax()
	if limit == 0 {
		limit = memTotal()
	}
	if limit == 0 {
		return 0
	}
	return max(int(limit/4/queuedRequestBytes), queueDepth)
}

// cgroupMemoryMax is this process's cgroup v2 memory limit in bytes, 0 if
// none or unknown.
func cgroupMemoryMax() uint64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	// cgroup v2: one line "0::/path".
	_, path, ok := strings.Cut(strings.TrimSpace(string(b)), "0::")
	if !ok {
		return 0
	}
	v, err := os.ReadFile("/sys/fs/cgroup" + strings.TrimSpace(path) + "/memory.max")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
	if err != nil {
		return 0 // "max": no limit
	}
	return n
}

// memTotal is the machine's memory in bytes, 0 if unknown.
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// validName reports whether the API server takes name as a gateway's.
func validName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for i, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case i > 0 && strings.ContainsRune("-_.:", r):
		default:
			return false
		}
	}
	return true
}

func validGossipAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	p, perr := strconv.Atoi(port)
	return err == nil && perr == nil && p >= 0 && p <= 65535
}

// Run builds the gateway that o describes and serves until ctx ends; then
// it drains (see Gateway.Run), leaves gossip, and returns once everything
// it started has exited. Bad options are reported, every field at once
// (ErrInvalidConfig), before anything starts.
func Run(ctx context.Context, o Options) (err error) {
	// The gateway's drain closes them; this is for a return before that.
	defer func() {
		for _, ln := range []net.Listener{o.Listener, o.TLSListener} {
			if err != nil && ln != nil {
				_ = ln.Close()
			}
		}
	}()
	if err := o.Validate(); err != nil {
		return err
	}
	o = o.withDefaults()
	if o.Config.MaxQueued == 0 {
		o.Config.MaxQueued = memoryQueueBound(o.Config.QueueDepth)
	}
	c, err := client.New(&o.API)
	if err != nil {
		return fmt.Errorf("gateway API client: %w", err)
	}
	// The client's idle connections to the API, once nothing uses them.
	defer func() {
		if t, ok := c.Transport().(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}()
	log := o.Log
	act := &ControlPlaneActivator{Client: c, Log: log, Clock: o.Clock}
	defer act.Wait()
	sources := []RouteSource{&ControlPlaneSource{Client: c, Log: log, Clock: o.Clock}}
	var gs *GossipSource
	if len(o.GossipSeeds) > 0 {
		gs = NewGossipSource()
		sources = append(sources, gs)
	}
	gw, err := New(o.Config, Deps{
		Sources:     sources,
		Activator:   act,
		Stats:       &ControlPlaneStatsSink{Client: c, Gateway: o.Name, MetricsURL: o.MetricsURL, Log: log, Clock: o.Clock},
		Registerer:  o.Registerer,
		Log:         log,
		AccessLog:   o.AccessLog,
		Clock:       o.Clock,
		Listener:    o.Listener,
		TLSListener: o.TLSListener,
		CertIssuer:  o.CertIssuer,
	})
	if err != nil {
		return err
	}
	if gs != nil {
		// Leave only after the drain: requests in flight meanwhile still
		// learn of replicas that go.
		defer joinGossip(c, o, gs)()
	}
	addr := o.Config.Addr
	if o.Listener != nil {
		addr = o.Listener.Addr().String()
	}
	tlsAddr := o.Config.TLSAddr
	if o.TLSListener != nil {
		tlsAddr = o.TLSListener.Addr().String()
	}
	log.Info("gateway serving", "addr", addr, "tls", tlsAddr, "domain", o.Config.Domain, "name", o.Name, "gossip", gs != nil)
	return gw.Run(ctx)
}

// gossipKeyRetry paces a gateway's asks for the gossip key while the API
// cannot answer.
var gossipKeyRetry = backoff.Policy{Base: 500 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}

// joinGossip makes the gateway a member of the cluster's gossip, in the
// background: it gets the gossip key from the API with the gateway's
// token (asking again while the API is out of reach: the gateway serves
// from what it knows meanwhile) and starts the member, handled by gs.
// leave stops both.
func joinGossip(c *client.Client, o Options, gs *GossipSource) (leave func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var member *gossip.Running
	var wg sync.WaitGroup
	wg.Go(func() {
		var key []byte
		err := backoff.Retry(ctx, o.Clock, gossipKeyRetry, func(ctx context.Context) (err error) {
			key, err = client.GossipKey(ctx, c)
			switch {
			case errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden):
				return backoff.Permanent(err)
			case err != nil && ctx.Err() == nil:
				o.Log.Warn("gateway gossip: no gossip key yet; endpoints come from the API meanwhile", "err", err)
			}
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			member, err = gossip.Start(gossip.Options{
				Role: gossip.RoleGateway, NodeName: "gw-" + o.Name, Addr: o.GossipAddr, Seeds: o.GossipSeeds,
				Key: key, Handler: gs, Logger: o.Log, Clock: o.Clock,
			})
		}
		if err != nil {
			o.Log.Error("gateway gossip: not a member; endpoints come from the API alone", "err", err)
		}
	})
	return func() {
		cancel()
		wg.Wait()
		if member != nil {
			member.Stop()
		}
	}
}
