package nodeagent

import (
	"fmt"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/backoff"
)

// A replica's container goes through a small state machine, kept apart
// from the supervisor that drives it so that its rules can be read in one
// place and tested without containers, probes or clocks. The supervisor
// (the shell) does the work of each state — start, probe, wait, sleep —
// and turns what happened into an event; transition (the core) says which
// state comes next and what the supervisor must do on the way: write the
// status, tell the data path, end the start-up boost, clean up. This is
// the split of etcd's raft (Step returns what to do, the caller does it),
// at the size of one replica.
//
//	state          event          next             actions
//	(new, adopted)                adopting         settle
//	starting       ready          ready            settle, report Ready, announce ready
//	starting       start failed   backing off      report Starting, clean up
//	adopting       ready          ready            report Ready (if not already), announce ready
//	adopting       start failed   stopped
//	ready          probe failed   unready (at N)   announce gone, report Starting
//	unready        probe ok       ready            report Ready, announce ready
//	ready/unready  exited         backing off      announce gone, report Starting
//	backing off    waited         starting or restarting
//	restarting     ready          ready            settle, report Ready, announce ready
//	restarting     start failed   backing off      report Starting
//	any            cancelled      stopped
//
// The start-up boost (the CPU quota withheld until Ready) also ends
// without an event here: the runtime ends it itself when the replica is
// not Ready StartupCPUBoostMax after a start or restart
// (containers.Config), and an adopted container's ends as it is adopted:
// the agent cannot tell how long it has run boosted while no agent
// watched it.

// lifecycleState is where a replica's container is.
type lifecycleState int

const (
	// stateStarting: a new container is being pulled, created and started,
	// until it answers its probe.
	stateStarting lifecycleState = iota
	// stateAdopting: a container found running (made by an earlier agent),
	// its start-up boost ended, is probed until it answers.
	stateAdopting
	// stateReady: the container serves; it is probed every period.
	stateReady
	// stateUnready: the container runs but has failed its readiness
	// probe FailureThreshold times in a row: it is out of the data path
	// and reported Starting until a probe passes.
	stateUnready
	// stateBackingOff: waiting before the next start or restart.
	stateBackingOff
	// stateRestarting: a new task runs in the same container (same
	// rootfs, address and log), until it answers its probe.
	stateRestarting
	// stateStopped: supervision is over: the context ended, or an adopted
	// container never answered (see transition).
	stateStopped
)

var stateNames = [...]string{"starting", "adopting", "ready", "unready", "backing off", "restarting", "stopped"}

func (s lifecycleState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("lifecycleState(%d)", int(s))
}

// eventKind is what happened to a replica's container.
type eventKind int

const (
	// evReady: the container answers its probe, after a start, an
	// adoption or a restart.
	evReady eventKind = iota
	// evStartFailed: a start, adoption or restart did not reach ready;
	// why says what failed.
	evStartFailed
	// evProbeOK: a readiness probe of a running container passed.
	evProbeOK
	// evProbeFailed: a readiness probe failed; why says how.
	evProbeFailed
	// evExited: the container's process ended; why says how.
	evExited
	// evWaited: the back-off is over.
	evWaited
	// evCancelled: the supervisor's context ended.
	evCancelled
)

var eventNames = [...]string{"ready", "start failed", "probe ok", "probe failed", "exited", "waited", "cancelled"}

func (k eventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("eventKind(%d)", int(k))
}

// event is one input of transition.
type event struct {
	kind eventKind
	// at is when it happened, by the agent's clock.
	at time.Time
	// why is the failure or exit, as the status message shows it.
	why string
	// unchanged, on evReady of an adopted container, says the replica's
	// status already reads Ready at the container's address: nothing need
	// be written.
	unchanged bool
}

// actionKind is what the supervisor must do.
type actionKind int

const (
	// actSettle ends the start-up CPU boost: the container runs under its
	// CPU quota from now on.
	actSettle actionKind = iota
	// actReport writes the replica's status: phase, message, restarts,
	// and, with address, the answering container's IP and port.
	actReport
	// actAnnounceReady tells the data path the replica serves.
	actAnnounceReady
	// actAnnounceGone tells the data path the replica no longer serves.
	actAnnounceGone
	// actCleanUp removes what a failed start left (a container that never
	// answered, a half-made one), so that the next start begins clean.
	actCleanUp
)

var actionNames = [...]string{"settle", "report", "announce ready", "announce gone", "clean up"}

func (k actionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("actionKind(%d)", int(k))
}

// action is one output of transition, performed in order.
type action struct {
	kind actionKind
	// phase and msg are the status actReport writes.
	phase api.ReplicaPhase
	msg   string
	// address makes actReport write the answering container's address.
	address bool
}

func (a action) String() string {
	if a.kind != actReport {
		return a.kind.String()
	}
	s := "report " + string(a.phase)
	if a.msg != "" {
		s += " " + fmt.Sprintf("%q", a.msg)
	}
	if a.address {
		s += " with address"
	}
	return s
}

// lifecyclePolicy is the part of the agent's Config that transition reads.
type lifecyclePolicy struct {
	// failureThreshold is how many probes in a row must fail before a
	// ready container is taken out of the data path.
	failureThreshold int
	// backoff is the wait before the n-th start or restart after a
	// failure or an exit. Restarts are timed exactly: no jitter.
	backoff backoff.Policy
	// backoffReset: a container that ran this long before it exited
	// starts its restart count (and so its back-off) over.
	backoffReset time.Duration
}

func policyOf(c Config) lifecyclePolicy {
	return lifecyclePolicy{
		failureThreshold: c.ProbeFailureThreshold,
		backoff:          backoff.Policy{Base: c.BackoffBase, Max: c.BackoffMax},
		backoffReset:     c.BackoffReset,
	}
}

// lifecycle is a replica container's state and what transition remembers
// between events.
type lifecycle struct {
	state lifecycleState
	// next is where stateBackingOff leads: stateStarting after a failed
	// start (its container was cleaned up), stateRestarting after an exit
	// or a failed restart.
	next lifecycleState
	// wait is the back-off of stateBackingOff.
	wait time.Duration
	// startFailures counts failed starts in a row.
	startFailures int
	// restarts is the replica's restart count, as its status reports it.
	restarts int32
	// probeFailures counts failed probes in a row.
	probeFailures int
	// upSince is when the container last came up (evReady), for
	// backoffReset.
	upSince time.Time
}

// newLifecycle is where a supervisor begins: adopting a running container
// or starting a new one, with the restart count the status already has;
// and what to do first: an adopted container's start-up boost ends at
// once, Ready or not.
func newLifecycle(adopted bool, restarts int32) (lifecycle, []action) {
	m := lifecycle{state: stateStarting, restarts: restarts}
	if adopted {
		m.state = stateAdopting
		return m, []action{{kind: actSettle}}
	}
	return m, nil
}

// running reports whether a container is up in m's state: the states
// whose events are exits and probes.
func (m lifecycle) running() bool { return m.state == stateReady || m.state == stateUnready }

// transition is the lifecycle's rule: the state after ev, and what to do
// on the way, in order. It does no I/O and reads no clock. An event a
// state does not expect leaves it as it is, with nothing to do.
func transition(m lifecycle, ev event, p lifecyclePolicy) (lifecycle, []action) {
	if ev.kind == evCancelled {
		m.state = stateStopped
		return m, nil
	}
	switch m.state {
	case stateStarting:
		switch ev.kind {
		case evReady:
			return up(m, ev, true, true)
		case evStartFailed:
			m.startFailures++
			m = backOff(m, stateStarting, p.backoff.Delay(m.startFailures))
			return m, []action{
				{kind: actReport, phase: api.ReplicaStarting, msg: ev.why},
				{kind: actCleanUp},
			}
		}
	case stateAdopting:
		switch ev.kind {
		case evReady:
			return up(m, ev, false, !ev.unchanged)
		case evStartFailed:
			// An adopted container that never answers is left as it is,
			// under its CPU quota (newLifecycle), and its supervisor ends
			// (as before the lifecycle was a state machine).
			m.state = stateStopped
			return m, nil
		}
	case stateRestarting:
		switch ev.kind {
		case evReady:
			return up(m, ev, true, true)
		case evStartFailed:
			m.restarts++
			m = backOff(m, stateRestarting, p.backoff.Delay(int(m.restarts)))
			return m, []action{{kind: actReport, phase: api.ReplicaStarting, msg: "restart: " + ev.why}}
		}
	case stateBackingOff:
		if ev.kind == evWaited {
			m.state, m.wait = m.next, 0
		}
	case stateReady, stateUnready:
		switch ev.kind {
		case evProbeOK:
			m.probeFailures = 0
			if m.state == stateUnready {
				m.state = stateReady
				return m, []action{
					{kind: actReport, phase: api.ReplicaReady},
					{kind: actAnnounceReady},
				}
			}
		case evProbeFailed:
			m.probeFailures++
			if m.state == stateReady && m.probeFailures >= p.failureThreshold {
				m.state = stateUnready
				return m, []action{
					{kind: actAnnounceGone},
					{kind: actReport, phase: api.ReplicaStarting, msg: "readiness probe failing: " + ev.why},
				}
			}
		case evExited:
			// Restart in place, after a back-off that grows with the
			// crashes in a row; a container that ran long enough starts
			// the count over.
			if ev.at.Sub(m.upSince) > p.backoffReset {
				m.restarts = 0
			}
			m.restarts++
			m = backOff(m, stateRestarting, p.backoff.Delay(int(m.restarts)))
			return m, []action{
				{kind: actAnnounceGone},
				{kind: actReport, phase: api.ReplicaStarting, msg: ev.why},
			}
		}
	}
	return m, nil
}

// up is the way into stateReady from a start, an adoption or a restart:
// the start-up boost ends (unless settle is false: an adoption ended it),
// the status says Ready at the container's address (unless report is
// false: it already does), and the data path is told.
func up(m lifecycle, ev event, settle, report bool) (lifecycle, []action) {
	m.state, m.upSince, m.probeFailures, m.startFailures = stateReady, ev.at, 0, 0
	var acts []action
	if settle {
		acts = append(acts, action{kind: actSettle})
	}
	if report {
		acts = append(acts, action{kind: actReport, phase: api.ReplicaReady, address: true})
	}
	return m, append(acts, action{kind: actAnnounceReady})
}

func backOff(m lifecycle, next lifecycleState, wait time.Duration) lifecycle {
	m.state, m.next, m.wait = stateBackingOff, next, wait
	return m
}
