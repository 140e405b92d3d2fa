package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/containers"
)

// supervisor owns one replica's container for as long as the replica is
// bound to this node: it is the only goroutine that starts, restarts or
// probes it, and the only writer of its status. It is the shell of the
// lifecycle state machine (lifecycle.go): it does the work of each state,
// feeds what happened to transition, and performs the actions it returns.
type supervisor struct {
	agent   *Agent
	replica *api.Replica
	cancel  context.CancelFunc
	done    chan struct{}
	log     *slog.Logger

	spec containers.Spec
	// template is the revision's spec, for its pull secrets.
	template api.FunctionSpec
	probe    probeConfig
	status   api.ReplicaStatus
	// c is the container that answers, or last answered.
	c containers.Container
	// seen is when the current start began, for its reported latency.
	seen time.Time
	// pending is the status write reportLater scheduled, if any: every
	// report settles it first (see settleReport).
	pending *pendingReport
	// phase is status.Phase, for the metrics' collector, which reads it
	// from another goroutine.
	phase atomic.Value // api.ReplicaPhase
}

// currentPhase is the phase the replica's status says now.
func (s *supervisor) currentPhase() api.ReplicaPhase {
	p, _ := s.phase.Load().(api.ReplicaPhase)
	if p == "" {
		return api.ReplicaPending
	}
	return p
}

// setPhase sets the status' phase and message.
func (s *supervisor) setPhase(phase api.ReplicaPhase, msg string) {
	s.status.Phase, s.status.Message = phase, msg
	s.phase.Store(phase)
}

// probeConfig is how a replica is probed, from its revision.
type probeConfig struct {
	// path is the HTTP path probed; empty probes with a TCP connect.
	path string
	// period is the probe period once Ready.
	period time.Duration
}

func probeConfigOf(rev *api.Revision, readyPeriod time.Duration) probeConfig {
	pc := probeConfig{period: readyPeriod}
	if p := rev.Spec.Template.Readiness; p != nil {
		pc.path = p.Path
		if d := p.Period.Duration; d > 0 {
			pc.period = d
		}
	}
	return pc
}

// specFor resolves a replica's revision template into what the runtime runs.
func specFor(r *api.Replica, rev *api.Revision) (containers.Spec, error) {
	t := rev.Spec.Template
	cpu, err := api.ParseCPU(t.Resources.CPU)
	if err != nil {
		return containers.Spec{}, err
	}
	mem, err := api.ParseMemory(t.Resources.Memory)
	if err != nil {
		return containers.Spec{}, err
	}
	env := make([]string, 0, len(t.Env))
	for _, e := range t.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	port := t.Port
	if port == 0 {
		port = api.DefaultPort
	}
	return containers.Spec{
		ID: r.Metadata.Name, Namespace: r.Metadata.Namespace, Function: r.Spec.Function, Revision: r.Spec.Revision,
		Image: rev.Spec.Image(), Command: t.Command, Args: t.Args, Env: env, Port: port,
		MilliCPU: cpu, MemoryBytes: mem,
	}, nil
}

// run supervises the replica until ctx ends: it resolves the revision,
// then drives the lifecycle from adopted (a container found running) or
// from a new start.
func (s *supervisor) run(ctx context.Context, adopted *containers.Container) {
	a := s.agent
	r := s.replica
	s.status = r.Status
	s.phase.Store(r.Status.Phase)
	s.log = a.log.With("replica", r.Metadata.Name)
	s.seen = a.clock.Now()
	defer s.settleReport()

	rev, err := retryGet(ctx, a.clock, func() (*api.Revision, error) {
		return a.replicas.revision(ctx, api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision})
	})
	if err != nil {
		return
	}
	s.template = rev.Spec.Template
	if s.spec, err = specFor(r, rev); err != nil {
		s.report(ctx, api.ReplicaFailed, "revision cannot run here: "+err.Error())
		return
	}
	s.probe = probeConfigOf(rev, a.cfg.ReadyProbePeriod)

	if adopted != nil {
		s.c = *adopted
		s.log.Info("adopted running container", "pid", s.c.PID)
	}
	m, acts := newLifecycle(adopted != nil, s.status.Restarts)
	for _, act := range acts {
		s.perform(ctx, act)
	}
	policy := policyOf(a.cfg)
	var w *watch // the running container's exit and probe ticker
	defer func() { w.stop() }()
	for m.state != stateStopped {
		if m.running() && w == nil {
			if w = s.watch(ctx); w == nil {
				return
			}
		}
		ev := s.await(ctx, m, w)
		from := m.state
		var acts []action
		m, acts = transition(m, ev, policy)
		if m.restarts > s.status.Restarts {
			a.metrics.restarts.Add(float64(m.restarts - s.status.Restarts))
		}
		if ev.kind == evStartFailed {
			a.metrics.failed.Inc()
		}
		if !m.running() {
			w.stop() // before the actions: no probe of a container that is gone
			w = nil
		}
		s.status.Restarts = m.restarts
		s.logEvent(from, ev, m)
		for _, act := range acts {
			s.perform(ctx, act)
		}
	}
}

// await does the work of m's state and returns what came of it.
func (s *supervisor) await(ctx context.Context, m lifecycle, w *watch) event {
	switch m.state {
	case stateStarting:
		c, err := s.start(ctx)
		return s.outcome(ctx, c, err)
	case stateAdopting:
		err := s.waitReady(ctx, s.c)
		ev := s.outcome(ctx, s.c, err)
		ev.unchanged = s.status.Phase == api.ReplicaReady && s.status.IP == s.c.IP
		return ev
	case stateRestarting:
		c, err := s.agent.runtime.Restart(ctx, s.replica.Metadata.Name)
		if err == nil {
			err = s.waitReady(ctx, c)
		}
		return s.outcome(ctx, c, err)
	case stateBackingOff:
		if !clock.Sleep(ctx, s.agent.clock, m.wait) {
			return s.event(evCancelled, "")
		}
		return s.event(evWaited, "")
	case stateReady, stateUnready:
		return w.next(ctx, s)
	}
	return s.event(evCancelled, "")
}

// outcome is the event of a start, adoption or restart that returned c
// and err: ready (c answers), failed, or cancelled when ctx ended.
func (s *supervisor) outcome(ctx context.Context, c containers.Container, err error) event {
	switch {
	case err == nil:
		s.c = c
		return s.event(evReady, "")
	case ctx.Err() != nil:
		return s.event(evCancelled, "")
	default:
		return s.event(evStartFailed, err.Error())
	}
}

func (s *supervisor) event(kind eventKind, why string) event {
	return event{kind: kind, at: s.agent.clock.Now(), why: why}
}

// logEvent logs what a person reading the agent's log wants to know of a
// transition: a start that failed, a container that ended.
func (s *supervisor) logEvent(from lifecycleState, ev event, m lifecycle) {
	switch {
	case ev.kind == evStartFailed && from == stateStarting:
		s.log.Warn("start replica", "err", ev.why)
	case ev.kind == evExited:
		s.log.Warn("replica container ended; restarting", "why", ev.why, "restarts", m.restarts)
	}
}

// perform does one action of a transition.
func (s *supervisor) perform(ctx context.Context, act action) {
	a := s.agent
	switch act.kind {
	case actSettle:
		s.settle(ctx)
	case actReport:
		if act.address {
			s.status.IP, s.status.Port = s.c.IP, s.c.Port
		}
		s.report(ctx, act.phase, act.msg)
	case actAnnounceReady:
		if a.announce != nil {
			a.announce.EndpointReady(s.withStatus())
		}
	case actAnnounceGone:
		if a.announce != nil {
			a.announce.EndpointGone(s.withStatus())
		}
	case actCleanUp:
		stop := func(ctx context.Context, id string) error { return a.runtime.Stop(ctx, id, 0) }
		if d, ok := a.runtime.(discarder); ok {
			stop = d.Discard // the log stays: it says why the start failed
		}
		if err := stop(ctx, s.replica.Metadata.Name); err != nil && ctx.Err() == nil {
			s.log.Warn("clean up after a failed start", "err", err)
		}
		s.seen = a.clock.Now()
	}
}

// watch is what a running container's supervisor waits on: its exit and
// its probe ticker.
type watch struct {
	exit  <-chan containers.Exit // nil when the runtime could not wait: probes only
	probe clock.Ticker
}

// watch starts watching the running container; nil when ctx ended.
func (s *supervisor) watch(ctx context.Context) *watch {
	exit, err := s.agent.runtime.Wait(ctx, s.replica.Metadata.Name)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("wait for replica", "err", err)
		exit = nil
	}
	return &watch{exit: exit, probe: s.agent.clock.NewTicker(s.probe.period)}
}

// next waits for the container's exit or its next probe.
func (w *watch) next(ctx context.Context, s *supervisor) event {
	select {
	case <-ctx.Done():
		return s.event(evCancelled, "")
	case e := <-w.exit:
		why := "exited with code " + strconv.Itoa(int(e.Code))
		if e.Err != nil {
			why = e.Err.Error()
		}
		return s.event(evExited, why)
	case <-w.probe.Chan():
		if err := s.agent.probe(ctx, s.c.IP, s.c.Port, s.probe.path); err != nil {
			return s.event(evProbeFailed, err.Error())
		}
		return s.event(evProbeOK, "")
	}
}

func (w *watch) stop() {
	if w != nil {
		w.probe.Stop()
	}
}

// start pulls, creates, starts and probes a new container, and records
// each step's latency in the status; the report is the lifecycle's.
func (s *supervisor) start(ctx context.Context) (containers.Container, error) {
	a := s.agent
	s.reportLater(ctx, startingReportDelay, api.ReplicaStarting, "")
	if pa, ok := a.replicas.(pullAuthAPI); ok {
		auths, err := pa.pullAuth(ctx, s.replica.Metadata.Namespace, &s.template)
		if err != nil {
			return containers.Container{}, fmt.Errorf("read pull secrets: %w", err)
		}
		ctx = containers.WithPullAuth(ctx, auths)
	}
	if err := a.runtime.EnsureImage(ctx, s.spec.Image); err != nil {
		return containers.Container{}, fmt.Errorf("pull image %s: %w", s.spec.Image, err)
	}
	a.images.add(s.spec.Image)
	pulled := a.clock.Now()
	c, err := a.runtime.Start(ctx, s.spec)
	if err != nil {
		return containers.Container{}, fmt.Errorf("start container: %w", err)
	}
	started := a.clock.Now()
	if err := s.waitReady(ctx, c); err != nil {
		return containers.Container{}, err
	}
	ready := a.clock.Now()
	create := min(c.Creating, started.Sub(pulled))
	a.metrics.started(pulled.Sub(s.seen), create, started.Sub(pulled)-create, ready.Sub(started))
	s.status.StartLatency = ready.Sub(s.seen).Round(time.Millisecond).String()
	s.status.StartPhases = fmt.Sprintf("image %s, start %s, ready %s",
		pulled.Sub(s.seen).Round(time.Millisecond), started.Sub(pulled).Round(time.Millisecond), ready.Sub(started).Round(time.Millisecond))
	return c, nil
}

// discarder is implemented by runtimes that can remove a replica's
// container but keep its log, for the clean-up after a failed start.
type discarder interface {
	Discard(ctx context.Context, id string) error
}

// cpuLimiter is implemented by runtimes that start replicas without their
// CPU quota (the start-up boost) and set it once they are Ready.
type cpuLimiter interface {
	ApplyCPULimit(ctx context.Context, id string) error
}

// settle ends a replica's start-up boost: from Ready on it runs under its
// CPU quota.
func (s *supervisor) settle(ctx context.Context) {
	if l, ok := s.agent.runtime.(cpuLimiter); ok {
		if err := l.ApplyCPULimit(ctx, s.replica.Metadata.Name); err != nil && ctx.Err() == nil {
			s.agent.log.Warn("apply cpu limit", "replica", s.replica.Metadata.Name, "err", err)
		}
	}
}

// waitReady probes a container every ProbeInterval until it answers, for
// at most StartTimeout, and fails at once when the container exits first
// (a function that crashes at start-up is told apart from a slow one, and
// surge deploy can say so without waiting out the timeout). The timeout is
// a timer, not a context deadline: the probes' own I/O deadlines are real
// time, whatever the clock.
func (s *supervisor) waitReady(ctx context.Context, c containers.Container) error {
	a := s.agent
	expired := a.clock.NewTimer(a.cfg.StartTimeout)
	defer expired.Stop()
	t := a.clock.NewTicker(a.cfg.ProbeInterval)
	defer t.Stop()
	wctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	exited, err := a.runtime.Wait(wctx, s.replica.Metadata.Name)
	if err != nil {
		exited = nil // probes alone, as before
	}
	for {
		err := a.probe(ctx, c.IP, c.Port, s.probe.path)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-expired.Chan():
			return fmt.Errorf("not ready after %s: %w", a.cfg.StartTimeout, err)
		case e, ok := <-exited:
			if !ok || ctx.Err() != nil {
				exited = nil
				continue
			}
			if e.Err != nil {
				return fmt.Errorf("exited before it was ready: %w", e.Err)
			}
			return fmt.Errorf("exited with code %d before it was ready", e.Code)
		case <-t.Chan():
		}
	}
}

// probeClient sends readiness probes. It runs in the node's own network,
// which reaches what replicas must not (the node's ports, a cloud's
// metadata address), and the replica chooses its answer: so it follows no
// redirect (a replica could point it anywhere, blind, and multiply one
// probe into many requests), and it uses no proxy. One probe is one
// request to the replica's own address.
var probeClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// probeOnce checks a replica: a TCP connect, then an HTTP GET of path when
// one is set. Any status below 400 passes, a redirect included: a 3xx says
// the replica serves HTTP, as Kubernetes' httpGet judges it; unlike
// Kubernetes, which follows a redirect to the same host, the probe follows
// none (see probeClient).
func probeOnce(ctx context.Context, ip string, port int32, path string) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	if path == "" {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	if req.URL.Host != addr {
		// The API admits only paths that start with '/'; a revision
		// stored before that rule must not aim the probe elsewhere.
		return fmt.Errorf("readiness path %q: leaves the replica's address", path)
	}
	req.Header.Set("User-Agent", "surge-probe")
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

func (s *supervisor) withStatus() *api.Replica {
	r := *s.replica
	r.Status = s.status
	return &r
}

// report writes the replica's status. A write reportLater scheduled is
// dropped if it has not begun, and waited for if it has, so that writes
// land in order. A replica deleted meanwhile is not an error: its
// supervisor is about to be cancelled.
func (s *supervisor) report(ctx context.Context, phase api.ReplicaPhase, msg string) {
	s.settleReport()
	s.setPhase(phase, msg)
	s.put(ctx, s.withStatus())
}

// startingReportDelay is how long a start may take before the agent says
// it is Starting. Most cold starts are Ready sooner (B3), and go from
// Pending to Ready in one status write instead of two, with no etcd
// write beside runc's create; a slow one (an image pull, a slow function)
// shows Starting soon enough for a person running surge describe.
const startingReportDelay = 100 * time.Millisecond

// reportLater is report after a delay, in a goroutine of its own, for a
// status the next report supersedes (Starting, on the cold start path):
// if that report comes first, this one is never written. The end of the
// supervisor's run settles it like a report.
func (s *supervisor) reportLater(ctx context.Context, after time.Duration, phase api.ReplicaPhase, msg string) {
	s.settleReport()
	s.setPhase(phase, msg)
	r, done := s.withStatus(), make(chan struct{})
	s.pending = &pendingReport{done: done, timer: s.agent.clock.AfterFunc(after, func() {
		defer close(done)
		s.put(ctx, r)
	})}
}

// pendingReport is a status write reportLater scheduled.
type pendingReport struct {
	timer clock.Timer
	done  chan struct{} // closed once the write, begun, is over
}

// settleReport drops the scheduled write if it has not begun, or waits
// until it is over.
func (s *supervisor) settleReport() {
	p := s.pending
	if p == nil {
		return
	}
	s.pending = nil
	if !p.timer.Stop() {
		<-p.done
	}
}

// statusRetry spaces the retries of status writes and revision reads.
// Jittered: when the API comes back, the agents' retries do not arrive
// together.
var statusRetry = backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}

// put writes r's status, retrying until it lands, the replica is gone, or
// ctx ends.
func (s *supervisor) put(ctx context.Context, r *api.Replica) {
	r.Metadata.ResourceVersion = ""
	_ = backoff.Retry(ctx, s.agent.clock, statusRetry, func(ctx context.Context) error {
		err := s.agent.replicas.putStatus(ctx, r)
		if err == nil || errors.Is(err, api.ErrNotFound) {
			return nil
		}
		s.agent.log.Warn("report replica status", "replica", r.Metadata.Name, "err", err)
		return err
	})
}

// retryGet retries a read until it succeeds, is not found, or ctx ends.
func retryGet[T any](ctx context.Context, clk clock.Clock, get func() (*T, error)) (*T, error) {
	var v *T
	err := backoff.Retry(ctx, clk, statusRetry, func(context.Context) error {
		var err error
		if v, err = get(); errors.Is(err, api.ErrNotFound) {
			return backoff.Permanent(err)
		}
		return err
	})
	return v, err
}
