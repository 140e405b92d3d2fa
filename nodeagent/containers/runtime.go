package containers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sync/singleflight"

	"github.com/surgeplatform/surge/internal/keyed"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// ErrNotFound is returned for a replica id that has no container (or no
// task, where one is needed).
var ErrNotFound = errors.New("containers: not found")

// Runtime runs Surge replicas on one node through containerd. It is safe
// for concurrent use; calls for one replica id are serialized, calls for
// different ids run in parallel.
//
// It keeps no state that containerd and the state dir do not: a Runtime
// made by a restarted agent finds every replica (List) with the same PID,
// IP and log file, and can Wait, Restart and Stop them.
type Runtime struct {
	cfg      Config
	client   *client.Client
	net      *network.Network
	resolver remotes.Resolver
	address  string
	private  *privateContainerd // nil unless this Runtime started it
	noFile   uint64             // RLIMIT_NOFILE of replicas

	ids keyed.Mutex

	images    sync.Map // normalized ref -> *imageInfo
	pulls     singleflight.Group
	logStates sync.Map // log path -> *logState
	// logsOverNodeCap is whether the last pass of RotateLogs found the
	// logs over the node's cap: its warning is logged once per episode.
	logsOverNodeCap atomic.Bool
	boosts          *boostDeadlines
	watchMu         sync.Mutex
	watches         map[string]*watch
	ctx             context.Context // ends with Close; task waits hang on it
	cancel          context.CancelFunc
	wg              sync.WaitGroup // task wait goroutines and the network's warm pool
	closeErr        error
	closed          sync.Once
}

// New checks cfg, connects to containerd and prepares replica networking.
//
// When nothing answers at cfg.ContainerdAddress and cfg.PrivateContainerd
// is set, it uses the private containerd under cfg.StateDir/containerd if
// one is already running there (left by an earlier agent), else starts it
// and waits for it; Close stops a containerd that New started. It logs once
// which containerd it uses.
func New(ctx context.Context, cfg Config) (_ *Runtime, retErr error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "replicas"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("create runtime state dir: %w", err)
		}
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{
		cfg:     cfg,
		watches: map[string]*watch{},
		ctx:     namespaces.WithNamespace(rctx, cfg.Namespace),
		cancel:  cancel,
		noFile:  openFilesLimit(),
	}
	r.boosts = newBoostDeadlines(cfg.Clock, cfg.StartupCPUBoostMax, r.endBoost)
	defer func() {
		if retErr != nil {
			r.Close()
		}
	}()

	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	var err error
	if r.net, err = network.New(cfg.Network); err != nil {
		return nil, err
	}
	// The warm pool of network namespaces lives as long as the Runtime;
	// Close waits for it to release what it holds.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.net.RunPool(r.ctx); err != nil {
			r.cfg.Log.Warn("warm network namespaces", "err", err)
		}
	}()
	if r.resolver, err = newResolver(cfg, nil); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Runtime) connect(ctx context.Context) error {
	addr := r.cfg.ContainerdAddress
	version, ok := probe(ctx, addr)
	which := "containerd"
	if !ok {
		if !r.cfg.PrivateContainerd {
			return fmt.Errorf("containers: no containerd answers at %s: start it (containerd &) or enable PrivateContainerd", addr)
		}
		dir := filepath.Join(r.cfg.StateDir, "containerd")
		addr = filepath.Join(dir, "containerd.sock")
		which = "private containerd left running by an earlier agent"
		if version, ok = probe(ctx, addr); !ok {
			p, err := startPrivateContainerd(ctx, r.cfg.Clock, r.cfg.ContainerdBinary, dir)
			if err != nil {
				return fmt.Errorf("containers: no containerd answers at %s, and %w", r.cfg.ContainerdAddress, err)
			}
			r.private = p
			which = "private containerd started by this agent"
			version, _ = probe(ctx, addr)
		}
	}
	c, err := client.New(addr, client.WithDefaultNamespace(r.cfg.Namespace), client.WithDefaultRuntime(r.cfg.Runtime))
	if err != nil {
		return fmt.Errorf("containers: connect to containerd at %s: %w", addr, err)
	}
	r.client, r.address = c, addr
	r.cfg.Log.Info("runtime: using "+which, "address", addr, "version", version, "namespace", r.cfg.Namespace)
	return nil
}

// ContainerdAddress is the socket of the containerd in use: the configured
// one, or the private one's.
func (r *Runtime) ContainerdAddress() string { return r.address }

// Client is the containerd client, namespaced to Config.Namespace, for
// callers that need containerd itself (tests, diagnostics).
func (r *Runtime) Client() *client.Client { return r.client }

// Network is the replica networking, for peer routes.
func (r *Runtime) Network() *network.Network { return r.net }

// Close stops the runtime's waits and boost deadlines (a replica still in
// its start-up boost keeps it until the next agent adopts it), releases
// the network's warm pool (CNI
// DEL of the namespaces no replica took) and, if New started a private
// containerd, stops it (its replicas keep running in their shims), and
// removes the namespace's cgroup when no container is left in it. It does
// not stop replicas. It is safe to call more than once.
func (r *Runtime) Close() error {
	r.closed.Do(func() {
		r.cancel()
		r.boosts.close()
		r.wg.Wait()
		var errs []error
		if r.client != nil {
			errs = append(errs, r.client.Close())
		}
		if r.private != nil {
			errs = append(errs, r.private.stop())
		}
		// The namespace's cgroup, when no container is left in it, goes
		// with the runtime: a node as it was before the agent ran.
		errs = append(errs, removeCgroupParent(r.cfg.Namespace))
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// nsctx namespaces ctx for containerd.
func (r *Runtime) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}
