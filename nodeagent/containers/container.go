package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/surgeplatform/surge/nodeagent/network"
)

// ErrExists is returned by Start for an id that already has a container.
var ErrExists = errors.New("containers: already exists")

// Start creates and starts replica spec.ID: the image made ready by
// EnsureImage (called here if it was not), its own network namespace and
// IP, a hardened spec (see specOpts), stdout and stderr appended to
// LogPath(spec.ID) by the shim itself, so the replica keeps running and
// logging when the agent dies. It returns once the process runs; whether
// it serves is for the caller's readiness probe.
//
// The network namespace comes from the network's warm pool, its CNI ADD
// done, when the pool has one. Otherwise the ADD (tens of milliseconds)
// runs while the container and its task (the shim, runc create) are made
// in the already pinned namespace; the process starts once both are done,
// so it never runs without its address.
//
// A failed Start leaves nothing behind. An id that already has a container
// fails with ErrExists.
func (r *Runtime) Start(ctx context.Context, spec Spec) (Container, error) {
	if err := validateSpec(spec); err != nil {
		return Container{}, err
	}
	unlock := r.ids.Lock(spec.ID)
	defer unlock()
	c, err := r.start(r.nsctx(ctx), spec)
	if err != nil {
		return Container{}, fmt.Errorf("start replica %s: %w", spec.ID, err)
	}
	return c, nil
}

// start is Start under the replica's lock. Each step that makes something
// pushes its undo; a failed start undoes them, newest first, once the
// network's ADD (if one runs) has ended.
func (r *Runtime) start(ctx context.Context, spec Spec) (_ Container, retErr error) {
	id := spec.ID
	t0 := r.cfg.Clock.Now()
	img, err := r.image(ctx, spec.Image)
	if err != nil {
		return Container{}, fmt.Errorf("image %s: %w", spec.Image, err)
	}
	// The lease keeps the new snapshot from the garbage collector until the
	// container record refers to it.
	ctx, done, err := r.client.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return Container{}, err
	}
	defer done(context.WithoutCancel(ctx))
	var undo undoStack
	defer func() {
		if retErr != nil {
			undo.run(ctx, r.cfg.Log, id)
		}
	}()

	pn, err := r.reserveNetwork(ctx, id, &undo)
	if err != nil {
		return Container{}, err
	}
	defer pn.release() // runs before the undo: the ADD never outlives Start
	in, resolv := r.specInputFor(spec, img, pn.reserved)
	labels := replicaLabels(spec, pn.reserved.IP, in.port)

	// NewContainer and NewTask run to their end even when ctx ends
	// meanwhile: a call cut short may still make its container or task
	// after it returned, and no undo would know to delete it. ctx is
	// checked after each.
	octx, cancelOp := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelOp()
	ctr, err := r.createContainer(octx, id, img, in, labels, &undo)
	if err != nil {
		return Container{}, err
	}
	if err := ctx.Err(); err != nil {
		return Container{}, err
	}
	if err := r.writeReplicaFiles(id, in, resolv, pn.reserved.IP, &undo); err != nil {
		return Container{}, err
	}
	tCreate := r.cfg.Clock.Now()

	task, err := createTask(octx, ctr, r.LogPath(id), &undo)
	if err != nil {
		return Container{}, err
	}
	if err := ctx.Err(); err != nil {
		return Container{}, err
	}
	tTask := r.cfg.Clock.Now()

	att, err := pn.wait()
	if err != nil {
		return Container{}, err
	}
	tNet := r.cfg.Clock.Now()
	if err := r.recordAddress(ctx, ctr, in.hosts, labels, att.IP); err != nil {
		return Container{}, err
	}

	c, err := r.startTask(ctx, ctr, task)
	if err != nil {
		return Container{}, err
	}
	c.Labels = labels
	c.IP, c.Port = att.IP, in.port
	c.Creating = tNet.Sub(t0)
	r.armBoost(id, labels)
	tStart := r.cfg.Clock.Now()
	r.cfg.Log.Debug("replica started", "replica", id, "pid", c.PID, "ip", c.IP, "port", c.Port,
		"took", tStart.Sub(t0), "container", tCreate.Sub(t0), "task", tTask.Sub(tCreate),
		"network_wait", tNet.Sub(tTask), "start", tStart.Sub(tNet))
	return c, nil
}

// undoStack is what a start in progress has made, as the functions that
// remove it.
type undoStack []func(context.Context) error

func (u *undoStack) push(f func(context.Context) error) { *u = append(*u, f) }

// forget drops every undo: what was made belongs to someone else.
func (u *undoStack) forget() { *u = nil }

// run undoes everything, newest first, on a context that outlives the
// caller's by up to 30 seconds; failures are logged, as nobody is left to
// return them to.
func (u undoStack) run(ctx context.Context, log *slog.Logger, id string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](cctx); err != nil {
			log.Warn("clean up failed start", "replica", id, "err", err)
		}
	}
}

// pendingNetwork is a replica's network attachment while its CNI ADD may
// still run beside the container's creation.
type pendingNetwork struct {
	// reserved is what Reserve returned: the pinned namespace, and the
	// address when the warm pool had one ready.
	reserved network.Attachment
	added    chan error         // the ADD's result; nil once received
	att      network.Attachment // the finished attachment, valid once added is received
	cancel   context.CancelFunc
}

// reserveNetwork reserves replica id's network namespace: one from the
// warm pool, its ADD done, or a new pinned one whose ADD starts here in
// the background.
func (r *Runtime) reserveNetwork(ctx context.Context, id string, undo *undoStack) (*pendingNetwork, error) {
	att, err := r.net.Reserve(ctx, id)
	if err != nil {
		return nil, err
	}
	undo.push(func(ctx context.Context) error { return r.net.Teardown(ctx, id) })
	pn := &pendingNetwork{reserved: att, added: make(chan error, 1), cancel: func() {}}
	if att.IP != "" {
		pn.att = att
		pn.added <- nil
		return pn, nil
	}
	actx, cancel := context.WithCancel(ctx)
	pn.cancel = cancel
	go func() {
		var err error
		pn.att, err = r.net.Setup(actx, id)
		pn.added <- err
	}()
	return pn, nil
}

// wait returns the finished attachment; call it once.
func (pn *pendingNetwork) wait() (network.Attachment, error) {
	err := <-pn.added
	pn.added = nil
	return pn.att, err
}

// release cuts short an ADD still running and waits for it to end.
func (pn *pendingNetwork) release() {
	pn.cancel()
	if pn.added != nil {
		<-pn.added
	}
}

// specInputFor is what replica spec's OCI spec is made from (see
// specOpts), with the resolv.conf to bind, or nil for none.
func (r *Runtime) specInputFor(spec Spec, img *imageInfo, att network.Attachment) (specInput, []byte) {
	port := spec.Port
	if port == 0 {
		port = defaultPort
	}
	if att.Port != 0 {
		port = att.Port
	}
	dir := r.replicaDir(spec.ID)
	in := specInput{
		spec:     spec,
		image:    img,
		att:      att,
		port:     port,
		hosts:    filepath.Join(dir, "hosts"),
		tmpSize:  r.cfg.TmpSize,
		pidLimit: spec.PidsLimit,
		noFile:   r.noFile,
		boost:    r.cfg.StartupCPUBoost,
	}
	if in.pidLimit == 0 {
		in.pidLimit = r.cfg.DefaultPidsLimit
	}
	resolv, hasResolv := resolvConf(hostResolvConf(), att.NetNS != "")
	if !hasResolv {
		return in, nil
	}
	in.resolv = filepath.Join(dir, "resolv.conf")
	return in, resolv
}

// replicaLabels are the labels of replica spec's container (see the Label
// constants).
func replicaLabels(spec Spec, ip string, port int32) map[string]string {
	return map[string]string{
		LabelReplica:  spec.ID,
		LabelFunction: spec.Function,
		LabelRevision: spec.Revision,
		LabelNS:       spec.Namespace,
		LabelIP:       ip,
		LabelPort:     strconv.Itoa(int(port)),
		LabelCPU:      strconv.FormatInt(spec.MilliCPU, 10),
	}
}

// createContainer creates replica id's container record with its rootfs
// snapshot and spec.
func (r *Runtime) createContainer(ctx context.Context, id string, img *imageInfo, in specInput, labels map[string]string, undo *undoStack) (client.Container, error) {
	ctr, err := r.client.NewContainer(ctx, id,
		client.WithImageName(img.name),
		client.WithSnapshotter(r.cfg.Snapshotter),
		r.withRootfs(id, img),
		client.WithRuntime(r.cfg.Runtime, nil),
		client.WithContainerLabels(labels),
		client.WithNewSpec(specOpts(in)...),
	)
	if err != nil {
		if errors.Is(err, ErrExists) {
			// Not ours to clean: the network and files belong to the
			// existing replica (whose attachment Reserve returned as is).
			undo.forget()
		}
		if errdefs.IsNotFound(err) {
			// The image or its snapshot went away behind our cache.
			r.forgetImage(img.name)
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	undo.push(func(ctx context.Context) error { return ctr.Delete(ctx, client.WithSnapshotCleanup) })
	return ctr, nil
}

// writeReplicaFiles writes the hosts file (with ip, which may still be
// empty) and resolv.conf that the container binds: they must exist for
// runc create to bind them.
func (r *Runtime) writeReplicaFiles(id string, in specInput, resolv []byte, ip string, undo *undoStack) error {
	dir := r.replicaDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	undo.push(func(context.Context) error { return os.RemoveAll(dir) })
	if err := os.WriteFile(in.hosts, hostsFile(id, ip), 0o644); err != nil {
		return err
	}
	if in.resolv != "" {
		if err := os.WriteFile(in.resolv, resolv, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// createTask creates ctr's task (the shim, runc create), its stdout and
// stderr appended to logPath by the shim.
func createTask(ctx context.Context, ctr client.Container, logPath string, undo *undoStack) (client.Task, error) {
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	undo.push(func(ctx context.Context) error {
		_, err := task.Delete(ctx, client.WithProcessKill)
		return err
	})
	return task, nil
}

// recordAddress writes ip, known once the ADD is done, where the container
// was made without it: the hosts file (in place: the bind mount holds the
// inode) and the container's LabelIP. It does nothing when labels has it.
func (r *Runtime) recordAddress(ctx context.Context, ctr client.Container, hosts string, labels map[string]string, ip string) error {
	if labels[LabelIP] == ip {
		return nil
	}
	labels[LabelIP] = ip
	if err := os.WriteFile(hosts, hostsFile(ctr.ID(), ip), 0o644); err != nil {
		return err
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{LabelIP: ip}); err != nil {
		return fmt.Errorf("label address: %w", err)
	}
	return nil
}

// withRootfs prepares the container's writable snapshot on the image's
// unpacked chain, keyed by the container id. Unlike containerd's
// WithNewSnapshot it reads nothing from the image: the chain ID is cached.
// A snapshot left by a Start that died before creating its container is
// replaced; one that belongs to an existing container is ErrExists.
func (r *Runtime) withRootfs(id string, img *imageInfo) client.NewContainerOpts {
	return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
		sn := c.SnapshotService(r.cfg.Snapshotter)
		_, err := sn.Prepare(ctx, id, img.chainID)
		if errdefs.IsAlreadyExists(err) {
			if _, lerr := c.LoadContainer(ctx, id); lerr == nil {
				return fmt.Errorf("replica %s: %w", id, ErrExists)
			}
			if err = sn.Remove(ctx, id); err == nil {
				_, err = sn.Prepare(ctx, id, img.chainID)
			}
		}
		if err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
		ctr.SnapshotKey = id
		return nil
	}
}

// startTask waits on task before starting it (so no exit is missed) and
// starts it.
func (r *Runtime) startTask(ctx context.Context, ctr client.Container, task client.Task) (Container, error) {
	id := ctr.ID()
	w, err := r.newWatch(id, task)
	if err != nil {
		return Container{}, err
	}
	if err := task.Start(ctx); err != nil {
		return Container{}, fmt.Errorf("start task: %w", err)
	}
	r.setWatch(id, w)
	info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, err
	}
	return Container{ID: id, PID: task.Pid(), Running: true, Created: info.CreatedAt}, nil
}

// Restart runs a new task in replica id's container: same rootfs, same
// network namespace and IP, same log file (appended). A task still running
// is killed first. Use it after Wait reported an exit.
func (r *Runtime) Restart(ctx context.Context, id string) (Container, error) {
	unlock := r.ids.Lock(id)
	defer unlock()
	ctx = r.nsctx(ctx)
	ctr, err := r.loadContainer(ctx, id)
	if err != nil {
		return Container{}, fmt.Errorf("restart replica %s: %w", id, err)
	}
	if err := r.deleteTask(ctx, ctr, 0); err != nil {
		return Container{}, fmt.Errorf("restart replica %s: %w", id, err)
	}
	task, err := ctr.NewTask(ctx, cio.LogFile(r.LogPath(id)))
	if err != nil {
		return Container{}, fmt.Errorf("restart replica %s: create task: %w", id, err)
	}
	c, err := r.startTask(ctx, ctr, task)
	if err != nil {
		task.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return Container{}, fmt.Errorf("restart replica %s: %w", id, err)
	}
	info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, fmt.Errorf("restart replica %s: %w", id, err)
	}
	fillFromLabels(&c, info.Labels)
	r.armBoost(id, info.Labels)
	return c, nil
}

// Stop ends replica id and removes everything Start made: SIGTERM, then
// SIGKILL once grace has passed (or at once when grace is 0), then the
// task, the container with its snapshot, the network namespace, the
// replica's files and its log files. It is idempotent: leftovers of an id
// without a container are removed too, and nothing left is not an error.
// When ctx ends during the grace the task is killed anyway.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	unlock := r.ids.Lock(id)
	defer unlock()
	return r.stop(r.nsctx(ctx), id, grace, false)
}

// Discard is Stop at once that keeps the replica's log: after a start that
// failed, so that the next start appends to it and the lines that tell why
// it crashed can still be read (surge deploy shows them). Stop removes it.
func (r *Runtime) Discard(ctx context.Context, id string) error {
	unlock := r.ids.Lock(id)
	defer unlock()
	return r.stop(r.nsctx(ctx), id, 0, true)
}

func (r *Runtime) stop(ctx context.Context, id string, grace time.Duration, keepLogs bool) error {
	r.boosts.disarm(id)
	ctr, err := r.loadContainer(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return fmt.Errorf("stop replica %s: %w", id, err)
	default:
		if err := r.deleteTask(ctx, ctr, grace); err != nil {
			return fmt.Errorf("stop replica %s: %w", id, err)
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("stop replica %s: delete container: %w", id, err)
		}
	}
	r.dropWatch(id)
	if err := r.net.Teardown(ctx, id); err != nil {
		return fmt.Errorf("stop replica %s: %w", id, err)
	}
	if err := os.RemoveAll(r.replicaDir(id)); err != nil {
		return fmt.Errorf("stop replica %s: %w", id, err)
	}
	if keepLogs {
		return nil
	}
	if err := r.removeLogs(id); err != nil {
		return fmt.Errorf("stop replica %s: %w", id, err)
	}
	return nil
}

// deleteTask stops ctr's task, if any (SIGTERM, SIGKILL after grace), and
// deletes it.
func (r *Runtime) deleteTask(ctx context.Context, ctr client.Container, grace time.Duration) error {
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load task: %w", err)
	}
	st, err := task.Status(ctx)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("task status: %w", err)
	}
	if err == nil && st.Status != client.Stopped {
		// Wait on a context that outlives ctx: the task is killed even if
		// the caller gives up during the grace.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+30*time.Second)
		defer cancel()
		exited, err := task.Wait(wctx)
		if err != nil {
			return fmt.Errorf("wait task: %w", err)
		}
		sig := syscall.SIGTERM
		if grace <= 0 {
			sig = syscall.SIGKILL
		}
		if err := task.Kill(wctx, sig); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("signal task: %w", err)
		}
		if sig == syscall.SIGTERM {
			t := r.cfg.Clock.NewTimer(grace)
			select {
			case <-exited:
			case <-t.Chan():
			case <-ctx.Done():
			}
			t.Stop()
		}
		select {
		case <-exited:
		default:
			if err := task.Kill(wctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("kill task: %w", err)
			}
			<-exited
		}
	}
	if _, err := task.Delete(context.WithoutCancel(ctx), client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task: %w", err)
	}
	return nil
}

func (r *Runtime) loadContainer(ctx context.Context, id string) (client.Container, error) {
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("replica %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return ctr, nil
}

// List returns every Surge replica container in the namespace, running or
// not, with its labels, address, and its task's PID (0 without a task).
// Two calls to containerd, whatever the number of replicas.
func (r *Runtime) List(ctx context.Context) ([]Container, error) {
	ctx = r.nsctx(ctx)
	ctrs, err := r.client.ContainerService().List(ctx, fmt.Sprintf("labels.%q", LabelReplica))
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	tasks, err := r.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	byID := make(map[string]*tasktypes.Process, len(tasks.Tasks))
	for _, t := range tasks.Tasks {
		byID[t.ID] = t
	}
	out := make([]Container, 0, len(ctrs))
	for _, c := range ctrs {
		x := Container{ID: c.ID, Labels: c.Labels, Created: c.CreatedAt}
		fillFromLabels(&x, c.Labels)
		if t := byID[c.ID]; t != nil {
			x.PID = t.Pid
			x.Running = t.Status == tasktypes.Status_RUNNING || t.Status == tasktypes.Status_PAUSED
			if !x.Running {
				x.PID = 0
			}
		}
		out = append(out, x)
	}
	return out, nil
}

func fillFromLabels(c *Container, labels map[string]string) {
	c.Labels = labels
	c.IP = labels[LabelIP]
	if p, err := strconv.ParseInt(labels[LabelPort], 10, 32); err == nil {
		c.Port = int32(p)
	}
}

// RemoveOrphans stops and removes (as Stop with no grace) every replica
// container whose id keep rejects, then tears down network attachments
// and deletes log and replica files that no container claims: what an
// agent killed mid-Start, or a replica deleted while the agent was down,
// leaves behind, and the network's warm pool namespaces of an agent that
// is gone. keep is called without locks and may block. It returns
// the ids it removed; errors do not stop it, they are joined.
func (r *Runtime) RemoveOrphans(ctx context.Context, keep func(id string) bool) ([]string, error) {
	ctx = r.nsctx(ctx)
	var (
		removed []string
		errs    []error
	)
	cs, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if keep(c.ID) {
			continue
		}
		if err := r.Stop(ctx, c.ID, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, c.ID)
	}

	// Leftovers without a container. Each is checked under its id's lock,
	// so a Start in progress (network set up, container not yet created)
	// is not mistaken for one.
	atts, err := r.net.Attachments()
	if err != nil {
		errs = append(errs, err)
	}
	ids := map[string]bool{}
	for _, a := range atts {
		ids[a.ID] = true
	}
	for _, id := range r.fileIDs() {
		ids[id] = true
	}
	for id := range ids {
		unlock := r.ids.Lock(id)
		_, err := r.loadContainer(ctx, id)
		if errors.Is(err, ErrNotFound) {
			if err := r.stop(ctx, id, 0, false); err != nil {
				errs = append(errs, err)
			} else if !slices.Contains(removed, id) {
				removed = append(removed, id)
			}
		} else if err != nil {
			errs = append(errs, err)
		}
		unlock()
	}
	// The network's warm pool entries are no replica's: only those of an
	// agent that is gone go.
	if err := r.net.ReleaseStalePool(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := r.net.RemoveStrayNamespaces(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

func (r *Runtime) replicaDir(id string) string {
	return filepath.Join(r.cfg.StateDir, "replicas", id)
}

// Wait returns a channel that receives how replica id's current task ends,
// then closes. It receives an Exit with Err set, and no code, when ctx ends
// first or the Runtime is closed. A task that already exited is reported
// at once. The goroutine behind the channel ends with the task or ctx.
func (r *Runtime) Wait(ctx context.Context, id string) (<-chan Exit, error) {
	w, err := r.watchFor(r.nsctx(ctx), id)
	if err != nil {
		return nil, fmt.Errorf("wait replica %s: %w", id, err)
	}
	out := make(chan Exit, 1)
	go func() {
		defer close(out)
		select {
		case <-w.done:
			out <- w.exit
		case <-ctx.Done():
			out <- Exit{At: r.cfg.Clock.Now(), Err: ctx.Err()}
		}
	}()
	return out, nil
}

// watch is one task's exit, waited for once by the Runtime and shared by
// every Wait call.
type watch struct {
	pid  uint32
	done chan struct{} // closed when exit is set
	exit Exit
}

// newWatch waits on task on the Runtime's context (not a caller's: the
// wait must outlive the Start that began it). It must be called before
// the task starts.
func (r *Runtime) newWatch(id string, task client.Task) (*watch, error) {
	statusC, err := task.Wait(r.ctx)
	if err != nil {
		return nil, fmt.Errorf("wait task: %w", err)
	}
	w := &watch{pid: task.Pid(), done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		st := <-statusC
		code, at, err := st.Result()
		if err != nil {
			w.exit = Exit{At: r.cfg.Clock.Now(), Err: fmt.Errorf("wait replica %s: %w", id, err)}
		} else {
			w.exit = Exit{Code: code, At: at}
		}
		close(w.done)
	}()
	return w, nil
}

func (r *Runtime) setWatch(id string, w *watch) {
	r.watchMu.Lock()
	r.watches[id] = w
	r.watchMu.Unlock()
}

func (r *Runtime) dropWatch(id string) {
	r.watchMu.Lock()
	delete(r.watches, id)
	r.watchMu.Unlock()
}

// watchFor returns the watch of id's current task, starting one for a task
// this Runtime did not start (adopted after an agent restart).
func (r *Runtime) watchFor(ctx context.Context, id string) (*watch, error) {
	unlock := r.ids.Lock(id)
	defer unlock()
	r.watchMu.Lock()
	w := r.watches[id]
	r.watchMu.Unlock()
	if w != nil {
		return w, nil
	}
	ctr, err := r.loadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("replica %s has no task: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if w, err = r.newWatch(id, task); err != nil {
		return nil, err
	}
	r.setWatch(id, w)
	return w, nil
}

// ApplyCPULimit sets replica id's CPU quota and weight (shares) from its
// spec. With Config.StartupCPUBoost the replica starts without them, so
// that its start-up (the runtime's, then the function's own) is neither
// throttled to its steady-state share nor outweighed on a busy node; the
// agent calls this once the replica is Ready, and again after every
// restart, and the runtime itself StartupCPUBoostMax after the task
// started if nobody did before. It is idempotent. An id without a
// container or a task is ErrNotFound.
func (r *Runtime) ApplyCPULimit(ctx context.Context, id string) error {
	unlock := r.ids.Lock(id)
	defer unlock()
	err := r.applyCPULimit(r.nsctx(ctx), id)
	if err == nil || errors.Is(err, ErrNotFound) {
		r.boosts.disarm(id) // over, or nothing left to limit
	}
	return err
}

func (r *Runtime) applyCPULimit(ctx context.Context, id string) error {
	ctr, err := r.loadContainer(ctx, id)
	if err != nil {
		return err
	}
	labels, err := ctr.Labels(ctx)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("cpu limit of replica %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("cpu limit of replica %s: %w", id, err)
	}
	milli, _ := strconv.ParseInt(labels[LabelCPU], 10, 64)
	if milli <= 0 {
		return nil
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("cpu limit of replica %s: no task: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("cpu limit of replica %s: %w", id, err)
	}
	quota, period, shares := cpuQuota(milli), uint64(cpuPeriod), cpuShares(milli)
	if err := task.Update(ctx, client.WithResources(&specs.LinuxResources{
		CPU: &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period},
	})); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("cpu limit of replica %s: task gone: %w", id, ErrNotFound)
		}
		return fmt.Errorf("cpu limit of replica %s: %w", id, err)
	}
	return nil
}
