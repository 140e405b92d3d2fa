package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/containers"
)

// supervisor owns one replica's container for as long as the replica is
// bound to this node: it is the only goroutine that starts, restarts or
// probes it, and the only writer of its status.
type supervisor struct {
	agent   *Agent
	replica *api.Replica
	cancel  context.CancelFunc
	done    chan struct{}

	status api.ReplicaStatus
	// pending is the status write reportLater scheduled, if any: every
	// report settles it first (see settleReport).
	pending *pendingReport
}

// backoff is the wait before the n-th restart (n ≥ 1): base × 2^(n-1),
// capped.
func backoff(n int32, base, maxWait time.Duration) time.Duration {
	d := base
	for i := int32(1); i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
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
		Image: t.Image, Command: t.Command, Args: t.Args, Env: env, Port: port,
		MilliCPU: cpu, MemoryBytes: mem,
	}, nil
}

func (s *supervisor) run(ctx context.Context, adopted *containers.Container) {
	a := s.agent
	r := s.replica
	s.status = r.Status
	log := a.log.With("replica", r.Metadata.Name)
	seen := a.now()
	defer s.settleReport()

	rev, err := retryGet(ctx, func() (*api.Revision, error) { return a.revision(ctx, r.Metadata.Namespace, r.Spec.Revision) })
	if err != nil {
		return
	}
	spec, err := specFor(r, rev)
	if err != nil {
		s.report(ctx, api.ReplicaFailed, "revision cannot run here: "+err.Error())
		return
	}
	probePath := ""
	period := a.cfg.ReadyProbePeriod
	if p := rev.Spec.Template.Readiness; p != nil {
		probePath = p.Path
		if d, err := time.ParseDuration(p.Period); err == nil && d > 0 {
			period = d
		}
	}

	var c containers.Container
	if adopted != nil {
		c = *adopted
		log.Info("adopted running container", "pid", c.PID)
		if err := s.waitReady(ctx, c, probePath, a.cfg.StartTimeout); err != nil {
			return
		}
		s.settle(ctx)
		if s.status.Phase != api.ReplicaReady || s.status.IP != c.IP {
			s.status.IP, s.status.Port = c.IP, c.Port
			s.report(ctx, api.ReplicaReady, "")
		}
	} else {
		for attempt := int32(0); ; attempt++ {
			if attempt > 0 {
				if !clock.Sleep(ctx, clock.Real(), backoff(attempt, a.cfg.BackoffBase, a.cfg.BackoffMax)) {
					return
				}
			}
			c, err = s.start(ctx, spec, probePath, seen)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("start replica", "err", err)
			s.report(ctx, api.ReplicaStarting, err.Error())
			// Whatever the failed attempt left (a container that never got
			// ready, a half-made one) goes, so the next attempt starts clean.
			if err := a.runtime.Stop(ctx, r.Metadata.Name, 0); err != nil && ctx.Err() == nil {
				log.Warn("clean up after a failed start", "err", err)
			}
			seen = a.now()
		}
	}
	if a.announce != nil {
		a.announce.EndpointReady(s.withStatus())
	}

	ranSince := a.now()
	for {
		exit, err := a.runtime.Wait(ctx, r.Metadata.Name)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("wait for replica", "err", err)
			exit = nil
		}
		probe := time.NewTicker(period)
		var code string
		failures := 0
	watching:
		for {
			select {
			case <-ctx.Done():
				probe.Stop()
				return
			case e := <-exit:
				code = "exited with code " + strconv.Itoa(int(e.Code))
				if e.Err != nil {
					code = e.Err.Error()
				}
				break watching
			case <-probe.C:
				if err := probeOnce(ctx, c.IP, c.Port, probePath); err != nil {
					failures++
					if failures == 3 && s.status.Phase == api.ReplicaReady {
						if a.announce != nil {
							a.announce.EndpointGone(s.withStatus())
						}
						s.report(ctx, api.ReplicaStarting, "readiness probe failing: "+err.Error())
					}
				} else if failures > 0 {
					failures = 0
					if s.status.Phase != api.ReplicaReady {
						s.report(ctx, api.ReplicaReady, "")
						if a.announce != nil {
							a.announce.EndpointReady(s.withStatus())
						}
					}
				}
			}
		}
		probe.Stop()
		// The container exited: restart it in place, after a back-off that
		// grows with consecutive crashes.
		if a.announce != nil {
			a.announce.EndpointGone(s.withStatus())
		}
		if a.now().Sub(ranSince) > a.cfg.BackoffReset {
			s.status.Restarts = 0
		}
		s.status.Restarts++
		log.Warn("replica container ended; restarting", "why", code, "restarts", s.status.Restarts)
		s.report(ctx, api.ReplicaStarting, code)
		for {
			if !clock.Sleep(ctx, clock.Real(), backoff(s.status.Restarts, a.cfg.BackoffBase, a.cfg.BackoffMax)) {
				return
			}
			c, err = a.runtime.Restart(ctx, r.Metadata.Name)
			if err == nil {
				err = s.waitReady(ctx, c, probePath, a.cfg.StartTimeout)
			}
			if err == nil {
				s.settle(ctx)
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.status.Restarts++
			s.report(ctx, api.ReplicaStarting, "restart: "+err.Error())
		}
		s.status.IP, s.status.Port = c.IP, c.Port
		s.report(ctx, api.ReplicaReady, "")
		if a.announce != nil {
			a.announce.EndpointReady(s.withStatus())
		}
		ranSince = a.now()
	}
}

// start pulls, creates, starts and probes a new container, and reports each
// step with its latency.
func (s *supervisor) start(ctx context.Context, spec containers.Spec, probePath string, seen time.Time) (containers.Container, error) {
	a := s.agent
	s.reportLater(ctx, startingReportDelay, api.ReplicaStarting, "")
	if err := a.runtime.EnsureImage(ctx, spec.Image); err != nil {
		return containers.Container{}, fmt.Errorf("pull image %s: %w", spec.Image, err)
	}
	pulled := a.now()
	c, err := a.runtime.Start(ctx, spec)
	if err != nil {
		return containers.Container{}, fmt.Errorf("start container: %w", err)
	}
	started := a.now()
	if err := s.waitReady(ctx, c, probePath, a.cfg.StartTimeout); err != nil {
		return containers.Container{}, err
	}
	ready := a.now()
	s.settle(ctx)
	s.status.IP, s.status.Port = c.IP, c.Port
	s.status.StartLatency = ready.Sub(seen).Round(time.Millisecond).String()
	s.status.StartPhases = fmt.Sprintf("image %s, start %s, ready %s",
		pulled.Sub(seen).Round(time.Millisecond), started.Sub(pulled).Round(time.Millisecond), ready.Sub(started).Round(time.Millisecond))
	s.report(ctx, api.ReplicaReady, "")
	return c, nil
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

// waitReady probes a container every ProbeInterval until it answers.
func (s *supervisor) waitReady(ctx context.Context, c containers.Container, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(s.agent.cfg.ProbeInterval)
	defer t.Stop()
	var last error
	for {
		if last = probeOnce(ctx, c.IP, c.Port, path); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, last)
		case <-t.C:
		}
	}
}

var probeClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// probeOnce checks a replica: a TCP connect, then an HTTP GET of path when
// one is set (any status below 400 passes).
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
	s.status.Phase, s.status.Message = phase, msg
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
	s.status.Phase, s.status.Message = phase, msg
	r, done := s.withStatus(), make(chan struct{})
	s.pending = &pendingReport{done: done, timer: time.AfterFunc(after, func() {
		defer close(done)
		s.put(ctx, r)
	})}
}

// pendingReport is a status write reportLater scheduled.
type pendingReport struct {
	timer *time.Timer
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

// put writes r's status, retrying until it lands or ctx ends.
func (s *supervisor) put(ctx context.Context, r *api.Replica) {
	r.Metadata.ResourceVersion = ""
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := s.agent.api.Do(ctx, "PUT", client.Path("replicas", r.Metadata.Namespace, r.Metadata.Name)+"/status", r, nil)
		if err == nil || errors.Is(err, api.ErrNotFound) {
			return
		}
		s.agent.log.Warn("report replica status", "replica", r.Metadata.Name, "err", err)
		if !clock.Sleep(ctx, clock.Real(), backoff(int32(attempt+1), 100*time.Millisecond, 5*time.Second)) {
			return
		}
	}
}

// retryGet retries a read until it succeeds, is not found, or ctx ends.
func retryGet[T any](ctx context.Context, get func() (*T, error)) (*T, error) {
	for attempt := int32(1); ; attempt++ {
		v, err := get()
		if err == nil || errors.Is(err, api.ErrNotFound) || ctx.Err() != nil {
			return v, err
		}
		if !clock.Sleep(ctx, clock.Real(), backoff(attempt, 100*time.Millisecond, 5*time.Second)) {
			return nil, ctx.Err()
		}
	}
}
