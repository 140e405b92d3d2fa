package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/closedloop"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// B4's shape, from e2e's TestAutoscaleStepToZeroAndBack: one request per
// replica, a short window, one closed-loop client for burstSteady, then
// burstClients of them; burstRounds times, a fresh function each round.
const (
	burstRounds  = 3
	burstClients = 10
	burstSteady  = 3 * time.Second
	// burstPoll is how often the Scale is read after the step: the
	// resolution of B4's numbers.
	burstPoll = 20 * time.Millisecond
)

// Burst is B4: through a `surge up` subprocess (gateway, stats, autoscaler,
// scheduler, agent, containerd), the time from a step from 1 to
// burstClients closed-loop clients of examples/hello (concurrency 1,
// window 6s) until the autoscaler asks for more replicas (Scale
// spec.replicas rises) and until one of them is Ready (status.readyReplicas
// rises past what was asked before the step). There is no baseline: the
// ratios are "-".
func Burst(ctx context.Context) (_ []Row, retErr error) {
	if err := needRuntime("B4"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	up, err := startSurgeUp(ctx, "surgeb4", "10.248.0.0/16")
	if err != nil {
		return nil, fmt.Errorf("B4: %w", err)
	}
	defer func() { retErr = errors.Join(retErr, up.close(ctx)) }()
	image, err := up.build(ctx, "hello:b4")
	if err != nil {
		return nil, fmt.Errorf("B4: %w", err)
	}
	var asked, ready []time.Duration
	var ok, failed int64
	var peak int32
	var firstErr string
	for round := range burstRounds {
		res, err := up.burstRound(ctx, fmt.Sprintf("burst-%d", round+1), image)
		if err != nil {
			return nil, fmt.Errorf("B4 round %d: %w", round+1, err)
		}
		asked, ready = append(asked, res.asked), append(ready, res.ready)
		ok, failed, peak = ok+res.ok, failed+res.failed, max(peak, res.peak)
		if firstErr == "" {
			firstErr = res.firstErr
		}
	}
	note := fmt.Sprintf("%d rounds; %d of %d requests failed; up to %d replicas asked", burstRounds, failed, ok+failed, peak)
	if firstErr != "" {
		note += "; first failure: " + firstErr
	}
	return []Row{
		{Bench: "B4", Subject: fmt.Sprintf("1→%d clients: more replicas asked (spec.replicas)", burstClients), Samples: asked, Note: note},
		{Bench: "B4", Subject: fmt.Sprintf("1→%d clients: a new replica Ready (readyReplicas)", burstClients), Samples: ready},
	}, nil
}

// burstResult is one round of B4.
type burstResult struct {
	asked, ready time.Duration
	ok, failed   int64
	firstErr     string
	peak         int32 // most replicas asked after the step
}

// burstRound deploys fn, loads it with one client, steps to burstClients,
// times the scale-up, and removes fn again.
func (s *surgeUp) burstRound(ctx context.Context, fn, image string) (res burstResult, retErr error) {
	out, err := deploy(ctx, s.api, fn, image, func(spec *api.FunctionSpec) {
		spec.Concurrency = 1
		spec.Scaling.StableWindow = api.Seconds(6)
		spec.Scaling.ScaleToZeroGrace = api.Seconds(2)
	})
	if err != nil {
		return burstResult{}, err
	}
	defer func() { retErr = errors.Join(retErr, s.remove(ctx, fn)) }()
	rev := out.Status.LatestRevision
	scale := func() (*api.Scale, error) {
		return client.Get[api.Scale](ctx, s.api, api.Key{Namespace: "default", Name: rev})
	}

	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer httpc.CloseIdleConnections()
	get := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.gateway+"/", nil)
		if err != nil {
			return err
		}
		req.Host = fn + ".surge.localhost"
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("hello from surge")) {
			return fmt.Errorf("%s: %q", resp.Status, b)
		}
		return nil
	}
	// The first replica and the gateway's route.
	if err := poll(ctx, 60*time.Second, 50*time.Millisecond, get); err != nil {
		return burstResult{}, fmt.Errorf("first request to %s: %w", fn, err)
	}

	load := closedloop.Start(ctx, 1, get)
	defer func() {
		r := load.Stop()
		res.ok, res.failed, res.firstErr = r.OK, r.Failed, r.FirstErr
	}()
	select { // one client's steady state before the step
	case <-time.After(burstSteady):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	sc, err := scale()
	if err != nil {
		return res, err
	}
	w := stepWatch{before: max(sc.Spec.Replicas, sc.Status.ReadyReplicas), step: time.Now()}
	load.Add(burstClients - 1)
	err = poll(ctx, 60*time.Second, burstPoll, func() error {
		sc, err := scale()
		if err != nil {
			return err
		}
		res.peak = max(res.peak, sc.Spec.Replicas)
		if !w.observe(time.Now(), sc.Spec.Replicas, sc.Status.ReadyReplicas) {
			return fmt.Errorf("replicas %d asked, %d ready; %d before the step", sc.Spec.Replicas, sc.Status.ReadyReplicas, w.before)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("no scale-up after a %dx step: %w", burstClients, err)
	}
	res.asked, res.ready = w.asked(), w.ready()
	return res, nil
}

// stepWatch finds, in Scale observations after a step in load, when more
// replicas than before the step were first asked for and first Ready.
type stepWatch struct {
	// before is the most replicas asked or ready at the step: a replica
	// counts as new only beyond it.
	before           int32
	step             time.Time
	askedAt, readyAt time.Time // zero until seen
}

// observe records one reading of Scale spec.replicas and
// status.readyReplicas taken at at, and reports whether both rises have
// been seen.
func (w *stepWatch) observe(at time.Time, asked, ready int32) bool {
	if w.askedAt.IsZero() && asked > w.before {
		w.askedAt = at
	}
	if w.readyAt.IsZero() && ready > w.before {
		w.readyAt = at
		if w.askedAt.IsZero() {
			// Read in the same instant; the ask came first.
			w.askedAt = at
		}
	}
	return !w.askedAt.IsZero() && !w.readyAt.IsZero()
}

// asked and ready are the times from the step to each rise, 0 until seen.
func (w *stepWatch) asked() time.Duration { return since(w.step, w.askedAt) }
func (w *stepWatch) ready() time.Duration { return since(w.step, w.readyAt) }

func since(from, to time.Time) time.Duration {
	if to.IsZero() {
		return 0
	}
	return to.Sub(from)
}

// poll calls f every interval until it returns nil or a stopPolling, ctx
// ends or limit passes; then it returns f's last error.
func poll(ctx context.Context, limit, interval time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop stopPolling
		if errors.As(err, &stop) {
			return stop.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// deploy creates function name in the default namespace, as `surge
// deploy` does: defaults filled here, spec changed by mutate.
func deploy(ctx context.Context, c *client.Client, name, image string, mutate func(*api.FunctionSpec)) (*api.Function, error) {
	fn := &api.Function{Metadata: api.ObjectMeta{Name: name, Namespace: "default"}, Spec: api.FunctionSpec{Image: image}}
	if mutate != nil {
		mutate(&fn.Spec)
	}
	api.SetDefaults(&fn.Spec)
	out, err := c.PutFunction(ctx, fn)
	if err != nil {
		return nil, fmt.Errorf("deploy %s: %w", name, err)
	}
	return out, nil
}

// surgeUp is one `surge up` subprocess as the e2e tests run it: its own
// data dir, free ports on 127.0.0.1, its own bridge and pod CIDR, and a
// private containerd under its data dir (so that its agent, which removes
// replicas it does not know, never sees another agent's containers).
type surgeUp struct {
	dir, bin, config, dataDir string
	gateway, bridge           string
	log                       string // the subprocess's output
	cmd                       *exec.Cmd
	exited                    chan struct{} // closed when cmd.Wait returns
	api                       *client.Client
}

// startSurgeUp builds the surge binary from the repository and starts
// `surge up`, and returns once its API answers. On error nothing is left.
func startSurgeUp(ctx context.Context, bridge, podCIDR string) (_ *surgeUp, retErr error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	// Short: the private containerd's socket lives under it.
	dir, err := os.MkdirTemp("", "sbu")
	if err != nil {
		return nil, err
	}
	s := &surgeUp{
		dir: dir, bin: filepath.Join(dir, "surge"), config: filepath.Join(dir, "config.yaml"),
		dataDir: filepath.Join(dir, "data"), bridge: bridge, log: filepath.Join(dir, "surge.log"),
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, s.close(ctx))
		}
	}()
	build := exec.CommandContext(ctx, "go", "build", "-o", s.bin, "./cmd/surge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return s, fmt.Errorf("build surge: %w\n%s", err, out)
	}
	var addrs [5]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return s, err
		}
	}
	s.gateway = addrs[3]
	logf, err := os.Create(s.log)
	if err != nil {
		return s, err
	}
	defer logf.Close() // the child has its own copy
	s.cmd = exec.Command(s.bin, "up", "--data-dir", s.dataDir,
		"--api-addr", addrs[0], "--etcd-client-addr", addrs[1], "--etcd-peer-addr", addrs[2],
		"--gateway-addr", s.gateway, "--gossip-addr", addrs[4], "--tls-addr", "", // no HTTPS: B10 measures HTTP
		"--pod-cidr", podCIDR, "--bridge", bridge,
		// The bursts' clients (B10's 5,000 connections) are all on
		// 127.0.0.1: no per-address cap.
		"--max-conns-per-ip", "0",
		// Nothing answers there, so the agent starts its own containerd.
		"--containerd-address", filepath.Join(dir, "no-containerd.sock"))
	s.cmd.Env = append(os.Environ(), "SURGE_CONFIG="+s.config)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C reaches only the benchmark, which
	// then removes the replicas before stopping surge.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return s, fmt.Errorf("start surge up: %w", err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()

	err = poll(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		select {
		case <-s.exited:
			return stopPolling{fmt.Errorf("surge up exited: %v", s.cmd.ProcessState)}
		default:
		}
		if s.api == nil {
			cfg, err := client.LoadConfig(s.config)
			if err != nil {
				return err
			}
			if s.api, err = client.New(cfg); err != nil {
				return err
			}
		}
		_, err := client.List[api.Function](ctx, s.api, "default", nil)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("surge up not serving: %w; its output ends:\n%s", err, tail(s.log, 2000))
	}
	return s, nil
}

// stopPolling wraps an error that poll returns at once instead of trying
// again.
type stopPolling struct{ err error }

func (e stopPolling) Error() string { return e.err.Error() }
func (e stopPolling) Unwrap() error { return e.err }

// build runs `surge build examples/hello -t tag` and returns the image
// reference it prints.
func (s *surgeUp) build(ctx context.Context, tag string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, s.bin, "build", filepath.Join(root, "examples", "hello"), "-t", tag)
	cmd.Env = append(os.Environ(), "SURGE_CONFIG="+s.config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("surge build examples/hello: %w: %s", err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}

// netnsLeft lists the network namespaces the agent still holds for
// replicas (not those of its warm pool, which go when it stops).
func (s *surgeUp) netnsLeft() []string {
	left, err := network.ReplicaNamespaces(filepath.Join(s.dataDir, "agent", "network"))
	if err != nil {
		return []string{err.Error()}
	}
	return left
}

// netnsAll lists every network namespace pinned under the agent's state,
// its warm pool's included: none may be left once surge has stopped.
func (s *surgeUp) netnsAll() []string {
	ents, _ := os.ReadDir(filepath.Join(s.dataDir, "agent", "network", "netns"))
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// remove deletes function fn and waits until the agent has stopped its
// replicas and released their network namespaces.
func (s *surgeUp) remove(ctx context.Context, fn string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := client.Delete[api.Function](ctx, s.api, api.Key{Namespace: "default", Name: fn}); err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("remove function %s: %w", fn, err)
	}
	return s.waitNetnsGone(ctx)
}

func (s *surgeUp) waitNetnsGone(ctx context.Context) error {
	err := poll(ctx, 60*time.Second, 50*time.Millisecond, func() error {
		if left := s.netnsLeft(); len(left) > 0 {
			return fmt.Errorf("network namespaces left: %v", left)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replicas not gone: %w", err)
	}
	return nil
}

// close removes every function, waits until their replicas' network
// namespaces are released (they outlive surge by design), stops surge
// (SIGTERM, SIGKILL after 30s), and removes the bridge and the data dir.
func (s *surgeUp) close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	running := s.cmd != nil && s.exited != nil
	if running {
		select {
		case <-s.exited:
			running = false
		default:
		}
	}
	if running && s.api != nil {
		if fns, err := client.List[api.Function](ctx, s.api, "default", nil); err != nil {
			errs = append(errs, fmt.Errorf("list functions: %w", err))
		} else {
			for _, f := range fns.Items {
				if err := client.Delete[api.Function](ctx, s.api, api.Key{Namespace: "default", Name: f.Metadata.Name}); err != nil && !errors.Is(err, api.ErrNotFound) {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, s.waitNetnsGone(ctx))
	}
	if running {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
			errs = append(errs, fmt.Errorf("surge up ignored SIGTERM for 30s; killed (its private containerd may be left running); output ends:\n%s", tail(s.log, 2000)))
		}
	}
	if left := s.netnsAll(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("network namespaces left under %s: %v", s.dataDir, left))
	}
	errs = append(errs, deleteBridge(s.bridge))
	if err := errors.Join(errs...); err != nil {
		// Keep the data dir to look at.
		return fmt.Errorf("clean up surge up (data in %s): %w", s.dir, err)
	}
	return os.RemoveAll(s.dir)
}

// tail returns the last n bytes of a file.
func tail(file string, n int64) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
