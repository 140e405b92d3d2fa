package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

	"github.com/surgeplatform/surge/api"
	surgeclient "github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/imagebuild"
	rt "github.com/surgeplatform/surge/nodeagent/containers"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// ErrMissingDependency is wrapped by a benchmark that cannot run on this
// machine (no root, containerd, runc or CNI plugins): the runner reports
// it as skipped rather than failed, unless CI=true.
var ErrMissingDependency = errors.New("benchmarks: missing dependency")

// ColdStartIters is how many cold starts B3 times of each kind, after
// coldStartWarmup untimed ones.
const (
	ColdStartIters  = 20
	coldStartWarmup = 2
)

// B3 goals from the issue: a replica answers within 1.3x the time bare
// containerd takes to create, start and get an answer from the same image,
// and within 100 ms.
const (
	coldStartRatioGoal = 1.3
	coldStartP50Goal   = 100 * time.Millisecond
)

// pollEvery is how often a starting container is asked for its first
// answer, on both sides of B3: the node agent's ProbeInterval.
const pollEvery = 2 * time.Millisecond

// B3's private corner of the machine: its own containerd namespace, bridge
// and subnet, so it cannot touch a `make run`, the e2e tests or another
// benchmark. One B3 at a time per machine.
const (
	coldNamespace = "surge-bench-b3"
	coldBridge    = "surgeb3"
	coldNetName   = "surge-bench-b3"
	coldSubnet    = "10.246.3.0/24"
	coldImage     = "bench.surge.invalid/hello:b3"
)

// ColdStart is B3, measured twice against one floor: in this process
// (coldStartRuntime: Surge's node runtime against bare containerd,
// interleaved), then through a `surge up` subprocess (coldStartFullPath).
// It returns the rows it has when a part fails, with the error.
func ColdStart(ctx context.Context) ([]Row, error) {
	rows, err := coldStartRuntime(ctx)
	if err != nil {
		return rows, err
	}
	full, err := coldStartFullPath(ctx, Quantile(rows[0].Samples, 0.5))
	return append(rows, full...), err
}

// coldStartRuntime is the time from asking for a replica of examples/hello
// until it answers HTTP, through Surge's node runtime (nodeagent/containers:
// its own network namespace and IP from a CNI bridge, the hardened spec,
// the default 100m CPU and 128Mi memory limits, a log file) against the
// floor of bare containerd through the same client (create a container
// with the image's config on the host network, start its task, first
// answer), and through the runtime without the CPU and memory limits, to
// show what they cost. They are interleaved, each going first in turn, so
// that noise on the machine hits all alike; all poll every pollEvery with
// a fresh connection. Each starts once the runtime's warm pool of network
// namespaces is full (network.Config.PoolSize), so that its refill never
// runs beside a timed start: Surge's starts take a namespace whose CNI ADD
// was done ahead, as they do on a node between cold starts (a burst past
// the pool does the ADD inline; B4 shows bursts).
//
// The image is built with imagebuild and imported into containerd from a
// tarball, unpacked before timing: a cold start here is a new container
// from a local image, not a pull. Everything it makes is removed before it
// returns, on error too.
func coldStartRuntime(ctx context.Context) (_ []Row, retErr error) {
	if err := needRuntime("B3"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	img, err := imagebuild.Build(ctx, imagebuild.DefaultOptions(filepath.Join(root, "examples", "hello")))
	if err != nil {
		return nil, fmt.Errorf("build examples/hello: %w", err)
	}

	// Short: a private containerd's socket lives under it.
	dir, err := os.MkdirTemp("", "sb3")
	if err != nil {
		return nil, err
	}
	cfg := rt.DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "s")
	cfg.Namespace = coldNamespace
	cfg.Network.Mode = network.ModeCNI
	cfg.Network.Subnet = coldSubnet
	cfg.Network.BridgeName = coldBridge
	cfg.Network.NetworkName = coldNetName
	r, err := rt.New(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("B3: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		retErr = errors.Join(retErr, cleanColdStart(cctx, r, dir))
	}()
	// What an earlier run killed half-way left in this namespace (on a
	// shared containerd) goes first.
	if err := sweepNamespace(ctx, r); err != nil {
		return nil, err
	}
	nsctx := namespaces.WithNamespace(ctx, coldNamespace)
	if err := importImage(nsctx, r.Client(), img, coldImage); err != nil {
		return nil, err
	}
	if err := r.EnsureImage(ctx, coldImage); err != nil {
		return nil, err
	}
	image, err := r.Client().GetImage(nsctx, coldImage)
	if err != nil {
		return nil, fmt.Errorf("B3: %w", err)
	}
	cpu, _ := api.ParseCPU(api.DefaultCPU)
	mem, _ := api.ParseMemory(api.DefaultMemory)

	type subject struct {
		row Row
		run func(ctx context.Context, id string) (time.Duration, error)
	}
	surge := func(limits bool) func(context.Context, string) (time.Duration, error) {
		return func(ctx context.Context, id string) (time.Duration, error) {
			spec := rt.Spec{
				ID: id, Namespace: "default", Function: "hello", Revision: "hello-00001",
				Image: coldImage, Port: api.DefaultPort,
			}
			if limits {
				spec.MilliCPU, spec.MemoryBytes = cpu, mem
			}
			return surgeColdStart(ctx, r, spec)
		}
	}
	subjects := []*subject{
		{Row{Subject: "bare containerd: create+start+first answer, host net", Baseline: true},
			func(ctx context.Context, id string) (time.Duration, error) {
				return bareColdStart(namespaces.WithNamespace(ctx, coldNamespace), r.Client(), image, id)
			}},
		{Row{Subject: fmt.Sprintf("Surge runtime.Start → first answer (netns, %s CPU, %s)", api.DefaultCPU, api.DefaultMemory)}, surge(true)},
		{Row{Subject: "Surge runtime.Start → first answer, no CPU/memory limit", Note: "diagnostic: what the default limits cost"}, surge(false)},
	}
	for i := range coldStartWarmup + ColdStartIters {
		for _, j := range rotation(i, len(subjects)) {
			s := subjects[j]
			id := fmt.Sprintf("b3-%d-%d", j, i)
			if s.row.Baseline {
				id = fmt.Sprintf("b3-bare-%d", i) // swept by name on the next run
			}
			ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
			// No refill of the runtime's warm pool of network namespaces
			// runs beside a timed start, of either kind: the pool is full
			// before each, as on a node between cold starts.
			err := r.Network().WaitPool(ictx)
			var d time.Duration
			if err == nil {
				d, err = s.run(ictx, id)
			}
			cancel()
			if err != nil {
				return nil, fmt.Errorf("B3 cold start %d of %q: %w", i, s.row.Subject, err)
			}
			if i >= coldStartWarmup {
				s.row.Samples = append(s.row.Samples, d)
			}
		}
	}
	rows := make([]Row, 0, len(subjects))
	for _, s := range subjects {
		s.row.Bench = "B3"
		rows = append(rows, s.row)
	}
	rows[1].Note = coldStartNote(Quantile(rows[1].Samples, 0.5), Quantile(rows[0].Samples, 0.5))
	return rows, nil
}

// rotation is the order in which round i runs n subjects: each goes first
// in turn, so that none always runs right after another's teardown.
func rotation(i, n int) []int {
	order := make([]int, n)
	for j := range order {
		order[j] = (i + j) % n
	}
	return order
}

// coldStartNote is the verdict on B3's goals for a p50 against the bare
// floor's p50.
func coldStartNote(p50, bareP50 time.Duration) string {
	limit := min(time.Duration(float64(bareP50)*coldStartRatioGoal), coldStartP50Goal)
	verdict := "met"
	if p50 > limit {
		verdict = "MISSED"
	}
	return fmt.Sprintf("goal p50 <= %.1fx base and <= %s (%s): %s", coldStartRatioGoal, coldStartP50Goal,
		limit.Round(100*time.Microsecond), verdict)
}

// surgeColdStart starts spec through the node runtime, times it until it
// answers, and stops it.
func surgeColdStart(ctx context.Context, r *rt.Runtime, spec rt.Spec) (_ time.Duration, retErr error) {
	start := time.Now()
	c, err := r.Start(ctx, spec)
	if err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		retErr = errors.Join(retErr, r.Stop(sctx, spec.ID, 0))
	}()
	if err := waitHTTP(ctx, "http://"+net.JoinHostPort(c.IP, strconv.Itoa(int(c.Port)))+"/"); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// bareColdStart is what a containerd user does without Surge: a container
// from the image's config with its own snapshot, on the host network with
// a free port, a task without I/O, waited on before it starts; then the
// first answer. It kills and deletes everything before returning.
func bareColdStart(ctx context.Context, c *client.Client, image client.Image, id string) (_ time.Duration, retErr error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cleanup := func(ctr client.Container, task client.Task, exited <-chan client.ExitStatus) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		var errs []error
		if task != nil {
			if err := task.Kill(cctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			} else if exited != nil {
				select {
				case <-exited:
				case <-cctx.Done():
				}
			}
			if _, err := task.Delete(cctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := ctr.Delete(cctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}

	start := time.Now()
	lctx, done, err := c.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return 0, err
	}
	defer done(context.WithoutCancel(ctx))
	ctr, err := c.NewContainer(lctx, id,
		client.WithImage(image),
		client.WithSnapshotter(rt.DefaultConfig().Snapshotter),
		client.WithNewSnapshot(id, image),
		client.WithNewSpec(
			oci.WithImageConfig(image),
			oci.WithEnv([]string{"PORT=" + port}),
			oci.WithHostNamespace(specs.NetworkNamespace),
			oci.WithHostHostsFile,
			oci.WithHostResolvconf,
		))
	if err != nil {
		return 0, fmt.Errorf("create container: %w", err)
	}
	var (
		task   client.Task
		exited <-chan client.ExitStatus
	)
	defer func() { retErr = errors.Join(retErr, cleanup(ctr, task, exited)) }()
	if task, err = ctr.NewTask(lctx, cio.NullIO); err != nil {
		return 0, fmt.Errorf("create task: %w", err)
	}
	if exited, err = task.Wait(context.WithoutCancel(lctx)); err != nil {
		return 0, fmt.Errorf("wait task: %w", err)
	}
	if err := task.Start(lctx); err != nil {
		return 0, fmt.Errorf("start task: %w", err)
	}
	if err := waitHTTP(ctx, "http://"+addr+"/"); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// importImage loads img into containerd as ref, from a docker-save
// tarball streamed to the client's Import: no registry involved.
func importImage(ctx context.Context, c *client.Client, img v1.Image, ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		err := tarball.Write(tag, img, pw)
		pw.CloseWithError(err)
		wrote <- err
	}()
	imgs, err := c.Import(ctx, pr)
	pr.CloseWithError(errors.New("import done")) // unblocks the writer if Import stopped early
	werr := <-wrote
	if err != nil {
		return fmt.Errorf("import %s into containerd: %w", ref, err)
	}
	if werr != nil {
		return fmt.Errorf("import %s into containerd: write tarball: %w", ref, werr)
	}
	for _, im := range imgs {
		if im.Name == ref {
			return nil
		}
	}
	return fmt.Errorf("import %s into containerd: got images %v, not it", ref, imgs)
}

// sweepNamespace kills and deletes every container of B3's namespace:
// bare ones by hand, Surge's through the runtime (which also releases
// their network namespaces and files).
func sweepNamespace(ctx context.Context, r *rt.Runtime) error {
	ctx = namespaces.WithNamespace(ctx, coldNamespace)
	c := r.Client()
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list B3 containers: %w", err)
	}
	var errs []error
	for _, ctr := range ctrs {
		if !strings.HasPrefix(ctr.ID(), "b3-bare-") {
			continue
		}
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if _, err := r.RemoveOrphans(ctx, func(string) bool { return false }); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove B3 containers: %w", err)
	}
	return nil
}

// cleanColdStart removes what B3 made: containers, network namespaces,
// the image and its content, the containerd namespace, the runtime (and a
// private containerd it started), the bridge and the state dir.
func cleanColdStart(ctx context.Context, r *rt.Runtime, dir string) error {
	errs := []error{sweepNamespace(ctx, r)}
	nsctx := namespaces.WithNamespace(ctx, coldNamespace)
	c := r.Client()
	if imgs, err := c.ImageService().List(nsctx); err == nil {
		for _, im := range imgs {
			if err := c.ImageService().Delete(nsctx, im.Name); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	// Deleting a lease synchronously runs the garbage collector, which
	// removes the image's content and snapshots; only then can the
	// namespace go.
	if l, err := c.LeasesService().Create(nsctx, leases.WithRandomID()); err == nil {
		c.LeasesService().Delete(nsctx, l, leases.SynchronousDelete)
	}
	if err := c.NamespaceService().Delete(nsctx, coldNamespace); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete containerd namespace %s: %w", coldNamespace, err))
	}
	errs = append(errs, r.Close(), deleteBridge(coldBridge), os.RemoveAll(dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up B3: %w", err)
	}
	return nil
}

// deleteBridge removes a Linux bridge a benchmark's replicas used; the CNI
// plugin leaves it behind when the last replica goes.
func deleteBridge(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil // gone already, or never made
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// pollClient asks starting containers for their first answer: a new
// connection each time (a refused one costs microseconds), never a proxy.
var pollClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: time.Second}).DialContext,
	},
}

// waitHTTP GETs url every pollEvery until it answers 200, or ctx ends.
func waitHTTP(ctx context.Context, url string) error {
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := pollClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s: %w (last: %v)", url, ctx.Err(), last)
		case <-time.After(pollEvery):
		}
	}
}

// needRuntime reports what running replicas needs and this machine lacks,
// as an error wrapping ErrMissingDependency.
func needRuntime(bench string) error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	// The surge up benchmarks always start a private containerd, so the
	// binary is needed even when a system one answers.
	for _, bin := range []string{"containerd", "runc", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	dirs := network.DefaultConfig().PluginDirs
	for _, p := range network.RequiredPlugins {
		found := false
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, p)); err == nil {
				found = true
			}
		}
		if !found {
			missing = append(missing, "CNI plugin "+p+" (in "+strings.Join(dirs, " or ")+")")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s needs %s; scripts/setup.sh installs them: %w", bench, strings.Join(missing, ", "), ErrMissingDependency)
}

// moduleRoot is the directory of Surge's go.mod, from the working
// directory (`go run ./benchmarks/cmd/bench` runs in the repository).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the repository: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("find the repository: not inside a Go module; run from Surge's repository")
	}
	b, err := os.ReadFile(mod)
	if err != nil || !strings.Contains(string(b), "module github.com/surgeplatform/surge\n") {
		return "", fmt.Errorf("find the repository: %s is not Surge's go.mod; run from Surge's repository", mod)
	}
	return filepath.Dir(mod), nil
}

// ColdStartFullPathIters is how many functions B3's full path deploys, one
// at a time, after one untimed one (whose replica also pulls the image).
const ColdStartFullPathIters = 10

// coldStartFullPath is B3 through a `surge up` subprocess: deploy a new
// function with min scale 1 (its Scale is created asking for one
// replica), then poll the
// API until its replica is Ready. It reports the agent's own measure, the
// replica's status.startLatency (from the agent seeing the binding to the
// readiness probe's first success, a TCP connect), and what a client sees
// from the deploy call to reading Ready (which adds the scheduler, the
// API round trips and burstPoll's granularity). Each function is removed,
// and its replica gone, before the next. Its rows are compared with the
// bare containerd floor, bareP50, measured just before in the same run
// but not interleaved with them.
func coldStartFullPath(ctx context.Context, bareP50 time.Duration) (_ []Row, retErr error) {
	if err := needRuntime("B3"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	up, err := startSurgeUp(ctx, "surgeb3f", "10.247.0.0/16")
	if err != nil {
		return nil, fmt.Errorf("B3 full path: %w", err)
	}
	defer func() { retErr = errors.Join(retErr, up.close(ctx)) }()
	image, err := up.build(ctx, "hello:b3")
	if err != nil {
		return nil, fmt.Errorf("B3 full path: %w", err)
	}
	var agent, observed []time.Duration
	for i := range 1 + ColdStartFullPathIters {
		fn := fmt.Sprintf("cold-%02d", i)
		start := time.Now()
		// MinScale 1: the autoscaler sends a revision that never had
		// traffic to zero at its first tick, which can be before its first
		// replica is Ready.
		if _, err := deploy(ctx, up.api, fn, image, func(s *api.FunctionSpec) { s.Scaling.MinScale = 1 }); err != nil {
			return nil, err
		}
		var ready *api.Replica
		err := poll(ctx, 60*time.Second, burstPoll, func() error {
			list, err := surgeclient.List[api.Replica](ctx, up.api, "default", url.Values{"function": {fn}})
			if err != nil {
				return err
			}
			for _, r := range list.Items {
				if r.Status.Phase == api.ReplicaReady {
					ready = &r
					return nil
				}
				if r.Status.Phase == api.ReplicaFailed {
					return stopPolling{fmt.Errorf("replica %s failed: %s", r.Metadata.Name, r.Status.Message)}
				}
			}
			return fmt.Errorf("%d replicas, none Ready", len(list.Items))
		})
		took := time.Since(start)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("B3 full path: %s not Ready: %w", fn, err), up.remove(ctx, fn))
		}
		lat, perr := time.ParseDuration(ready.Status.StartLatency)
		if err := up.remove(ctx, fn); err != nil {
			return nil, err
		}
		if perr != nil {
			return nil, fmt.Errorf("B3 full path: replica %s startLatency %q: %w", ready.Metadata.Name, ready.Status.StartLatency, perr)
		}
		if i > 0 {
			agent, observed = append(agent, lat), append(observed, took)
		}
	}
	return []Row{
		{Bench: "B3", Subject: "surge up: binding seen → Ready (agent's startLatency)", Samples: agent,
			Note: coldStartNote(Quantile(agent, 0.5), bareP50)},
		{Bench: "B3", Subject: "surge up: deploy → replica Ready, as a client polls it", Samples: observed},
	}, nil
}
