// Package nodeagent is Surge's kubelet: it registers its node, watches the
// replicas bound to it, and makes the container runtime match — create,
// start, probe, report, restart with back-off, stop — and finds its running
// containers again after a restart instead of restarting them.
//
// Run(ctx, Options) is the role: it builds the API client, the gossip
// member, the peer routes and the container runtime (package
// nodeagent/containers) and runs an Agent until ctx ends. Each replica's
// container is driven by a supervisor through the lifecycle state machine
// of lifecycle.go.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/containers"
)

// Runtime is what the agent needs of the container runtime; package
// nodeagent/containers implements it. Its methods may block on containerd
// and are called from the replica supervisors' goroutines, concurrently
// for different replica IDs, never concurrently for one.
type Runtime interface {
	EnsureImage(ctx context.Context, ref string) error
	Start(ctx context.Context, spec containers.Spec) (containers.Container, error)
	Wait(ctx context.Context, id string) (<-chan containers.Exit, error)
	Restart(ctx context.Context, id string) (containers.Container, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	List(ctx context.Context) ([]containers.Container, error)
	RemoveOrphans(ctx context.Context, keep func(id string) bool) ([]string, error)
}

var _ Runtime = (*containers.Runtime)(nil)

// Announcer tells the data path about endpoints at once (gossip), without
// waiting for etcd. Its methods must not block; they are called from
// supervisor goroutines.
type Announcer interface {
	EndpointReady(r *api.Replica)
	EndpointGone(r *api.Replica)
}

// Config configures an Agent. Make it with DefaultConfig.
type Config struct {
	// NodeName names the node; the default is the host name.
	NodeName string
	// Address is the node's address as peers reach it.
	Address string
	// MilliCPU and MemoryBytes are what the node offers replicas; the
	// defaults are the machine's cores and memory less a reserve for the
	// system (Reserved*).
	MilliCPU, MemoryBytes int64
	// ReservedMilliCPU and ReservedMemory are kept back for the system and
	// Surge itself.
	ReservedMilliCPU, ReservedMemory int64
	// Heartbeat is how often the agent renews its node's lease: the
	// control plane declares the node dead once gossip says so and a few
	// beats are missed (controllers.Config.LeaseConfirm). A beat is one
	// small request; a second lets a dead node go in a few seconds.
	Heartbeat time.Duration
	// Labels are the node's labels, which functions' node selectors
	// match; the agent sets them when it first registers the node. A
	// node changes none afterwards (see register): an operator does.
	Labels map[string]string
	// StatusEvery is how many beats apart the agent rewrites its node's
	// whole status (address, capacity, its endpoint), repairing it if
	// anyone changed it; the lease alone says it is alive.
	StatusEvery int
	// ProbeInterval is how often a starting replica is probed: short, as a
	// cold start waits on it.
	ProbeInterval time.Duration
	// StartTimeout fails a replica that is not ready this long after start.
	StartTimeout time.Duration
	// ReadyProbePeriod is the default probe period once Ready.
	ReadyProbePeriod time.Duration
	// ProbeFailureThreshold is how many probes in a row a Ready replica
	// must fail before it leaves the data path and is reported Starting
	// until one passes. Lower reacts sooner to a replica that hangs;
	// higher rides out a slow probe or a long GC pause.
	ProbeFailureThreshold int
	// BackoffBase and BackoffMax bound the wait before restarting a
	// container that exited: BackoffBase × 2^(restarts-1), at most
	// BackoffMax. A container that ran BackoffReset resets the count.
	BackoffBase, BackoffMax, BackoffReset time.Duration
	// StopGrace is how long a stopping replica has after SIGTERM.
	StopGrace time.Duration
	// StopReplicasOnExit makes Run stop every replica of the node when it
	// returns (SIGTERM, SIGKILL after StopGrace) and remove their
	// containers and networks: `surge up`, where stopping Surge must leave
	// nothing running. Off, as kubelet, replicas keep running and the
	// next agent adopts them: restarting the agent stops no function.
	StopReplicasOnExit bool
	// LogAddr is where the agent serves replica logs over HTTPS, to the
	// API server alone (it requires the API server's client certificate);
	// empty serves none.
	LogAddr string
	// Clock paces every wait of the agent (heartbeat, probes, back-offs,
	// the delayed Starting write, certificate renewal). Nil is the wall
	// clock. How old a heartbeat is, only the servers' clocks say.
	Clock clock.Clock
	// agentURL is where it does, once it does (sent with the heartbeat).
	agentURL string
	// MetricsURL is where the agent's metrics are scraped
	// (http://HOST:PORT/metrics), reported in the node's status for
	// discovery; the API server puts the node's address in place of a
	// wildcard host and takes no host but that one or loopback. Empty
	// reports none.
	MetricsURL string
	// apiCA is the cluster CA, PEM, which the API server's client
	// certificate chains to: the log server accepts no other caller.
	apiCA []byte
}

// DefaultConfig returns the defaults for this machine.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:         host,
		Address:          "127.0.0.1",
		ReservedMilliCPU: 100,
		ReservedMemory:   256 << 20,
		Heartbeat:        time.Second,
		StatusEvery:      30,
		ProbeInterval:    2 * time.Millisecond,
		StartTimeout:     time.Minute,
		ReadyProbePeriod: 10 * time.Second,
		// Three failures at the 10s period: half a minute of a hung
		// replica before the data path stops sending it requests.
		ProbeFailureThreshold: 3,
		BackoffBase:           100 * time.Millisecond,
		BackoffMax:            30 * time.Second,
		BackoffReset:          10 * time.Minute,
		StopGrace:             10 * time.Second,
		Clock:                 clock.Real(),
	}
}

// withDefaults fills, on a copy, what DefaultConfig leaves to the machine
// (the capacity: its cores and memory less the reserve) and a nil Clock.
func (c Config) withDefaults() Config {
	if c.MilliCPU == 0 {
		c.MilliCPU = int64(runtime.NumCPU())*1000 - c.ReservedMilliCPU
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = memTotal() - c.ReservedMemory
	}
	c.Clock = clock.Or(c.Clock)
	return c
}

// Validate reports every bad field.
func (c Config) Validate() error {
	var errs []error
	if err := api.ValidateName(c.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("node name %q: %s", c.NodeName, api.NameRule))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat", c.Heartbeat}, {"probe interval", c.ProbeInterval}, {"start timeout", c.StartTimeout},
		{"ready probe period", c.ReadyProbePeriod}, {"backoff base", c.BackoffBase}, {"backoff max", c.BackoffMax}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.v))
		}
	}
	if c.ProbeFailureThreshold < 1 {
		errs = append(errs, fmt.Errorf("probe failure threshold %d: must be at least 1", c.ProbeFailureThreshold))
	}
	if c.StatusEvery < 1 {
		errs = append(errs, fmt.Errorf("status every %d beats: must be at least 1", c.StatusEvery))
	}
	if c.StopGrace < 0 {
		errs = append(errs, fmt.Errorf("stop grace %s: must not be negative", c.StopGrace))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if err := api.ValidateLabel(k, c.Labels[k]); err != nil {
			errs = append(errs, fmt.Errorf("node label %s=%s: %w", k, c.Labels[k], err))
		}
	}
	return errors.Join(errs...)
}

// RuntimeFactory makes the runtime once the node is registered: the
// network needs the pod subnet the control plane gave the node.
type RuntimeFactory func(ctx context.Context, node *api.Node) (Runtime, error)

// Agent runs the replicas bound to one node.
type Agent struct {
	cfg        Config
	api        *client.Client
	newRuntime RuntimeFactory
	runtime    Runtime // set by Run, under mu
	metrics    *metrics
	announce   Announcer
	log        *slog.Logger
	clock      clock.Clock
	replicas   replicaAPI
	probe      probeFunc

	// images are the images pulled here, for the node's status.
	images imageSet

	mu          sync.Mutex
	supervisors map[api.Key]*supervisor // by replica
	wg          sync.WaitGroup
}

// New returns an agent. announce may be nil.
func New(cfg Config, c *client.Client, newRuntime RuntimeFactory, announce Announcer, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Agent{
		cfg: cfg, api: c, newRuntime: newRuntime, announce: announce, log: log.With("component", "agent", "node", cfg.NodeName),
		clock: cfg.Clock, replicas: &apiReplicas{api: c, revisions: map[api.Key]*api.Revision{}}, probe: probeOnce,
		supervisors: map[api.Key]*supervisor{}, metrics: newMetrics(),
	}, nil
}

// register creates or refreshes the node's object and returns it, with the
// pod subnet the control plane gave it (which the runtime's network
// needs). Run calls it as it starts, once the log server has its URL, and
// with every heartbeat.
func register(ctx context.Context, c *client.Client, cfg Config, images ...string) (*api.Node, error) {
	res := api.NodeResources{CPU: api.FormatCPU(cfg.MilliCPU), Memory: api.FormatMemory(cfg.MemoryBytes)}
	n := &api.Node{
		Metadata: api.ObjectMeta{Name: cfg.NodeName, Labels: cfg.Labels},
		Status: api.NodeStatus{Address: cfg.Address, Capacity: res, Allocatable: res,
			State: api.NodeAlive, AgentURL: cfg.agentURL, MetricsURL: cfg.MetricsURL, Images: images},
	}
	var out api.Node
	err := c.Do(ctx, "POST", client.CollectionPath[api.Node](""), n, &out)
	if errors.Is(err, api.ErrAlreadyExist) {
		// A status write keeps the labels the node has: a node sets its
		// labels when it first registers, and changes none afterwards
		// (NodeRestriction), or it could attract the functions that select
		// other nodes.
		err = c.Do(ctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: cfg.NodeName})+"/status", n, &out)
	}
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", cfg.NodeName, err)
	}
	if _, err := renewLease(ctx, c, cfg.NodeName); err != nil {
		return nil, err
	}
	return &out, nil
}

// startBackoff paces the start-up calls' attempts while the API answers
// 503.
var startBackoff = backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}

// whileUnavailable runs op, and again while the API answers 503 (every
// server's etcd electing a leader, for a moment): an agent started beside a
// control plane that changes leaders waits for it instead of exiting. Any
// other error is op's answer.
func (a *Agent) whileUnavailable(ctx context.Context, op func(context.Context) error) error {
	return backoff.Retry(ctx, a.clock, startBackoff, func(ctx context.Context) error {
		err := op(ctx)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == http.StatusServiceUnavailable {
			a.log.Warn("the API is unavailable; trying again", "err", err)
			return err
		}
		return backoff.Permanent(err)
	})
}

// registerAtStart is register, while the API is unavailable.
func (a *Agent) registerAtStart(ctx context.Context) (*api.Node, error) {
	var node *api.Node
	err := a.whileUnavailable(ctx, func(ctx context.Context) (err error) {
		node, err = register(ctx, a.api, a.cfg, a.images.list()...)
		return err
	})
	return node, err
}

// renewLease is one heartbeat: it renews the node's lease and returns the
// node as the API sees it.
func renewLease(ctx context.Context, c *client.Client, node string) (*api.Node, error) {
	var out api.Node
	if err := c.Do(ctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: node})+"/lease", nil, &out); err != nil {
		return nil, fmt.Errorf("renew lease of node %s: %w", node, err)
	}
	return &out, nil
}

// Run registers the node, adopts the containers already running, and
// supervises the node's replicas until ctx ends. Containers keep running
// when the agent stops, for a restarted agent to adopt, unless
// StopReplicasOnExit.
func (a *Agent) Run(ctx context.Context) error {
	node, err := a.registerAtStart(ctx)
	if ctx.Err() != nil {
		return nil // stopped while starting: nothing to undo
	}
	if err != nil {
		return err
	}
	rt, err := a.newRuntime(ctx, node)
	if err != nil {
		return fmt.Errorf("container runtime: %w", err)
	}
	a.mu.Lock() // the metrics' collector reads it from scrapes
	a.runtime = rt
	a.mu.Unlock()
	if c, ok := a.runtime.(io.Closer); ok {
		defer c.Close()
	}
	if ls, ok := a.runtime.(LogSource); ok && a.cfg.LogAddr != "" {
		url, stop, err := a.serveLogs(ctx, a.cfg.LogAddr, ls)
		if err != nil {
			return err
		}
		defer stop()
		a.cfg.agentURL = url
		if _, err := a.registerAtStart(ctx); err != nil && ctx.Err() == nil {
			return err
		}
	}
	if a.cfg.StopReplicasOnExit {
		// Deferred after the log server and the runtime's Close, so run
		// before them, and after the supervisors have returned.
		defer a.stopAll()
	}
	a.log.Info("node registered", "subnet", node.Spec.PodSubnet, "cpu", api.FormatCPU(a.cfg.MilliCPU), "memory", api.FormatMemory(a.cfg.MemoryBytes))
	q := url.Values{"node": {a.cfg.NodeName}}
	var list *api.List[api.Replica]
	err = a.whileUnavailable(ctx, func(ctx context.Context) (err error) {
		list, err = client.List[api.Replica](ctx, a.api, "", q)
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list replicas of node %s: %w", a.cfg.NodeName, err)
	}
	if err := a.adopt(ctx, list.Items); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); a.heartbeat(ctx) }()
	defer func() { <-hbDone; a.wg.Wait() }()
	if lr, ok := a.runtime.(interface{ RotateLogs(context.Context) error }); ok {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); _ = lr.RotateLogs(ctx) }()
	}

	rv := list.ResourceVersion
	for {
		err := client.Watch[api.Replica](ctx, a.api, "", client.WatchOptions{ResourceVersion: rv, Query: q},
			func(e api.WatchEvent[*api.Replica]) error {
				rv = e.ResourceVersion
				if e.Type == api.EventDeleted {
					a.release(e.Object)
				} else {
					a.ensure(ctx, e.Object)
				}
				return nil
			})
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, api.ErrGone) {
			return fmt.Errorf("watch replicas: %w", err)
		}
		// History compacted: list again, and drop what is no longer ours.
		list, err := client.List[api.Replica](ctx, a.api, "", q)
		if err != nil {
			return fmt.Errorf("list replicas: %w", err)
		}
		a.resync(ctx, list.Items)
		rv = list.ResourceVersion
	}
}

// adopt matches running containers with the replicas bound here: matches
// are supervised without a restart; the others are removed.
func (a *Agent) adopt(ctx context.Context, replicas []api.Replica) error {
	mine := map[string]bool{}
	for _, r := range replicas {
		mine[r.Metadata.Name] = true
	}
	removed, err := a.runtime.RemoveOrphans(ctx, func(id string) bool { return mine[id] })
	if err != nil {
		return fmt.Errorf("remove orphans: %w", err)
	}
	for _, id := range removed {
		a.log.Info("removed a container no replica claims", "container", id)
	}
	running, err := a.runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	have := map[string]containers.Container{}
	for _, c := range running {
		have[c.ID] = c
	}
	for i := range replicas {
		r := &replicas[i]
		if c, ok := have[r.Metadata.Name]; ok && c.Running {
			a.startSupervisor(ctx, r, &c)
		} else {
			a.ensure(ctx, r)
		}
	}
	return nil
}

func (a *Agent) resync(ctx context.Context, replicas []api.Replica) {
	want := map[api.Key]bool{}
	for i := range replicas {
		want[api.KeyOf(&replicas[i])] = true
		a.ensure(ctx, &replicas[i])
	}
	a.mu.Lock()
	var gone []*supervisor
	for k, s := range a.supervisors {
		if !want[k] {
			gone = append(gone, s)
		}
	}
	a.mu.Unlock()
	for _, s := range gone {
		a.release(s.replica)
	}
}

// ensure starts supervising a replica bound here, once.
func (a *Agent) ensure(ctx context.Context, r *api.Replica) {
	if r.Spec.NodeName != a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	_, ok := a.supervisors[api.KeyOf(r)]
	a.mu.Unlock()
	if !ok {
		a.startSupervisor(ctx, r, nil)
	}
}

func (a *Agent) startSupervisor(ctx context.Context, r *api.Replica, adopted *containers.Container) {
	sctx, cancel := context.WithCancel(ctx)
	s := &supervisor{agent: a, replica: r, cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.supervisors[api.KeyOf(r)] = s
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(s.done)
		s.run(sctx, adopted)
	}()
}

// release stops a replica that was deleted or moved away.
func (a *Agent) release(r *api.Replica) {
	a.mu.Lock()
	s, ok := a.supervisors[api.KeyOf(r)]
	delete(a.supervisors, api.KeyOf(r))
	a.mu.Unlock()
	if !ok {
		return
	}
	s.cancel()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-s.done
		if a.announce != nil {
			a.announce.EndpointGone(s.replica)
		}
		// A bound on real I/O (containerd), so on real time: the grace
		// itself is timed by the runtime's clock.
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StopGrace+5*time.Second)
		defer cancel()
		if err := a.runtime.Stop(ctx, r.Metadata.Name, a.cfg.StopGrace); err != nil {
			a.log.Warn("stop replica", "replica", r.Metadata.Name, "err", err)
		}
	}()
}

// stopAll stops every replica container of the node, StopGrace each, in
// parallel, then removes whatever is left (networks, files); for
// StopReplicasOnExit, once the supervisors have returned.
func (a *Agent) stopAll() {
	// A bound on real I/O (containerd), so on real time: the grace itself
	// is timed by the runtime's clock.
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StopGrace+30*time.Second)
	defer cancel()
	list, err := a.runtime.List(ctx)
	if err != nil {
		a.log.Warn("stop replicas on exit: list containers", "err", err)
	}
	var wg sync.WaitGroup
	for _, c := range list {
		wg.Go(func() {
			if err := a.runtime.Stop(ctx, c.ID, a.cfg.StopGrace); err != nil {
				a.log.Warn("stop replica on exit", "replica", c.ID, "err", err)
			}
		})
	}
	wg.Wait()
	if _, err := a.runtime.RemoveOrphans(ctx, func(string) bool { return false }); err != nil {
		a.log.Warn("stop replicas on exit: remove what is left", "err", err)
	}
	a.log.Info("stopped every replica of the node on exit", "replicas", len(list))
}

// replicaAPI is what supervisors read and write through the control
// plane. Its methods block on the network and are called from supervisor
// goroutines and reportLater's timers, concurrently.
type replicaAPI interface {
	// revision returns a revision; a missing one is api.ErrNotFound.
	revision(ctx context.Context, key api.Key) (*api.Revision, error)
	// putStatus writes r's status.
	putStatus(ctx context.Context, r *api.Replica) error
}

// probeFunc checks once whether a replica at ip:port answers (an HTTP GET
// of path, or a TCP connect when path is empty). It blocks at most about a
// second, and is called from supervisor goroutines.
type probeFunc func(ctx context.Context, ip string, port int32, path string) error

// apiReplicas is replicaAPI on the API server.
type apiReplicas struct {
	api *client.Client

	mu        sync.Mutex
	revisions map[api.Key]*api.Revision // revisions never change
}

var _ replicaAPI = (*apiReplicas)(nil)

func (c *apiReplicas) revision(ctx context.Context, key api.Key) (*api.Revision, error) {
	c.mu.Lock()
	rev, ok := c.revisions[key]
	c.mu.Unlock()
	if ok {
		return rev, nil
	}
	rev, err := client.Get[api.Revision](ctx, c.api, key)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.revisions[key] = rev
	c.mu.Unlock()
	return rev, nil
}

// pullAuth returns the credentials of the pull secrets a revision's image
// may be pulled with (see api.FunctionSpec.ImagePullSecrets): none for an
// image in the control plane's registry, whose token the runtime has, so
// that those cold starts make no extra call.
func (c *apiReplicas) pullAuth(ctx context.Context, namespace string, t *api.FunctionSpec) ([]containers.RegistryAuth, error) {
	host, ok := api.ImageRegistry(t.Image)
	if u, err := url.Parse(c.api.Server()); !ok || (err == nil && api.NormalizeRegistry(u.Host) == host) {
		return nil, nil
	}
	list, err := client.List[api.PullSecret](ctx, c.api, namespace, nil)
	if err != nil {
		return nil, err
	}
	var out []containers.RegistryAuth
	for _, ps := range list.Items {
		if api.NormalizeRegistry(ps.Spec.Registry) != host {
			continue
		}
		if len(t.ImagePullSecrets) > 0 && !slices.Contains(t.ImagePullSecrets, ps.Metadata.Name) {
			continue
		}
		out = append(out, containers.RegistryAuth{Host: ps.Spec.Registry, Username: ps.Spec.Username, Password: ps.Spec.Password})
	}
	return out, nil
}

// pullAuthAPI is the part of replicaAPI that reads pull secrets; the
// supervisors' fakes may leave it out.
type pullAuthAPI interface {
	pullAuth(ctx context.Context, namespace string, t *api.FunctionSpec) ([]containers.RegistryAuth, error)
}

var _ pullAuthAPI = (*apiReplicas)(nil)

func (c *apiReplicas) putStatus(ctx context.Context, r *api.Replica) error {
	return c.api.Do(ctx, "PUT", client.ObjectPath[api.Replica](api.KeyOf(r))+"/status", r, nil)
}

// heartbeat renews the node's lease every Heartbeat, and rewrites its
// status every StatusEvery beats or when the node is gone (deleted by an
// operator). Each beat is bounded by two periods, so that a beat lost on
// a dead connection does not hold back the next.
func (a *Agent) heartbeat(ctx context.Context) {
	t := a.clock.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for beat := 1; ; beat++ {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		// A deadline on a network call: wall time, whatever the clock.
		bctx, cancel := context.WithTimeout(ctx, 2*a.cfg.Heartbeat)
		var err error
		// A new image is told at the next beat, for the scheduler to
		// place the image's next replicas here.
		images, changed := a.images.take()
		if changed || beat%a.cfg.StatusEvery == 0 {
			_, err = register(bctx, a.api, a.cfg, images...)
			if err != nil && changed {
				a.images.untold() // tell them at the next beat
			}
		} else if _, err = renewLease(bctx, a.api, a.cfg.NodeName); errors.Is(err, api.ErrNotFound) {
			_, err = register(bctx, a.api, a.cfg, images...)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat", "err", err)
		}
	}
}

// memTotal reads the machine's memory from /proc/meminfo.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 1 << 30
	}
	var kb int64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 1 << 30
	}
	return kb << 10
}
