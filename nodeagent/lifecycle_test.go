package nodeagent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

var testPolicy = lifecyclePolicy{
	failureThreshold: 3,
	backoff:          backoff.Policy{Base: 100 * time.Millisecond, Max: 30 * time.Second},
	backoffReset:     10 * time.Minute,
}

func TestTransition(t *testing.T) {
	t0 := clock.Epoch
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ev := func(k eventKind, d time.Duration, why string) event { return event{kind: k, at: at(d), why: why} }
	up := lifecycle{state: stateReady, upSince: t0, restarts: 2}
	var (
		settle        = action{kind: actSettle}
		reportReadyAt = action{kind: actReport, phase: api.ReplicaReady, address: true}
		reportReady   = action{kind: actReport, phase: api.ReplicaReady}
		announceReady = action{kind: actAnnounceReady}
		announceGone  = action{kind: actAnnounceGone}
		cleanUp       = action{kind: actCleanUp}
		starting      = func(msg string) action { return action{kind: actReport, phase: api.ReplicaStarting, msg: msg} }
	)
	tests := []struct {
		name   string
		from   lifecycle
		ev     event
		policy *lifecyclePolicy // testPolicy when nil
		want   lifecycle
		acts   []action
	}{
		{
			name: "a new container comes up",
			from: lifecycle{state: stateStarting, restarts: 2},
			ev:   ev(evReady, 0, ""),
			want: up,
			acts: []action{settle, reportReadyAt, announceReady},
		},
		{
			name: "a failed start backs off the base, then starts anew",
			from: lifecycle{state: stateStarting},
			ev:   ev(evStartFailed, 0, "pull image x: not found"),
			want: lifecycle{state: stateBackingOff, next: stateStarting, wait: 100 * time.Millisecond, startFailures: 1},
			acts: []action{starting("pull image x: not found"), cleanUp},
		},
		{
			name: "the third failed start in a row waits four times the base",
			from: lifecycle{state: stateStarting, startFailures: 2},
			ev:   ev(evStartFailed, 0, "boom"),
			want: lifecycle{state: stateBackingOff, next: stateStarting, wait: 400 * time.Millisecond, startFailures: 3},
			acts: []action{starting("boom"), cleanUp},
		},
		{
			name: "a start after failures clears their count",
			from: lifecycle{state: stateStarting, startFailures: 3},
			ev:   ev(evReady, 0, ""),
			want: lifecycle{state: stateReady, upSince: t0},
			acts: []action{settle, reportReadyAt, announceReady},
		},
		{
			name: "the back-off of a start ends in a start",
			from: lifecycle{state: stateBackingOff, next: stateStarting, wait: time.Second, startFailures: 1},
			ev:   ev(evWaited, 0, ""),
			want: lifecycle{state: stateStarting, next: stateStarting, startFailures: 1},
		},
		{
			name: "the back-off of an exit ends in a restart",
			from: lifecycle{state: stateBackingOff, next: stateRestarting, wait: time.Second, restarts: 1},
			ev:   ev(evWaited, 0, ""),
			want: lifecycle{state: stateRestarting, next: stateRestarting, restarts: 1},
		},
		{
			name: "an adopted container whose status is stale is reported",
			from: lifecycle{state: stateAdopting, restarts: 2},
			ev:   ev(evReady, 0, ""),
			want: up,
			acts: []action{reportReadyAt, announceReady},
		},
		{
			name: "an adopted container whose status says so already is not reported",
			from: lifecycle{state: stateAdopting, restarts: 2},
			ev:   event{kind: evReady, at: t0, unchanged: true},
			want: up,
			acts: []action{announceReady},
		},
		{
			name: "an adopted container that never answers is left alone",
			from: lifecycle{state: stateAdopting},
			ev:   ev(evStartFailed, 0, "not ready after 1m0s"),
			want: lifecycle{state: stateStopped},
		},
		{
			name: "a failed probe below the threshold is counted",
			from: up,
			ev:   ev(evProbeFailed, time.Second, "connection refused"),
			want: lifecycle{state: stateReady, upSince: t0, restarts: 2, probeFailures: 1},
		},
		{
			name: "the threshold's failed probe takes it out of the data path",
			from: lifecycle{state: stateReady, upSince: t0, probeFailures: 2},
			ev:   ev(evProbeFailed, time.Second, "connection refused"),
			want: lifecycle{state: stateUnready, upSince: t0, probeFailures: 3},
			acts: []action{announceGone, starting("readiness probe failing: connection refused")},
		},
		{
			name:   "a threshold of one reacts to the first failure",
			from:   up,
			ev:     ev(evProbeFailed, time.Second, "timeout"),
			policy: &lifecyclePolicy{failureThreshold: 1, backoff: testPolicy.backoff, backoffReset: time.Minute},
			want:   lifecycle{state: stateUnready, upSince: t0, restarts: 2, probeFailures: 1},
			acts:   []action{announceGone, starting("readiness probe failing: timeout")},
		},
		{
			name: "a passing probe forgets the failures",
			from: lifecycle{state: stateReady, upSince: t0, probeFailures: 2},
			ev:   ev(evProbeOK, time.Second, ""),
			want: lifecycle{state: stateReady, upSince: t0},
		},
		{
			name: "more failures while unready change nothing",
			from: lifecycle{state: stateUnready, upSince: t0, probeFailures: 3},
			ev:   ev(evProbeFailed, time.Second, "connection refused"),
			want: lifecycle{state: stateUnready, upSince: t0, probeFailures: 4},
		},
		{
			name: "a passing probe brings it back",
			from: lifecycle{state: stateUnready, upSince: t0, probeFailures: 5},
			ev:   ev(evProbeOK, time.Second, ""),
			want: lifecycle{state: stateReady, upSince: t0},
			acts: []action{reportReady, announceReady},
		},
		{
			name: "an exit soon after coming up counts one more restart",
			from: up,
			ev:   ev(evExited, time.Minute, "exited with code 2"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: 400 * time.Millisecond, upSince: t0, restarts: 3},
			acts: []action{announceGone, starting("exited with code 2")},
		},
		{
			name: "an exit after BackoffReset starts the count over",
			from: up,
			ev:   ev(evExited, 10*time.Minute+time.Second, "exited with code 1"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: 100 * time.Millisecond, upSince: t0, restarts: 1},
			acts: []action{announceGone, starting("exited with code 1")},
		},
		{
			name: "an exit while unready is restarted too",
			from: lifecycle{state: stateUnready, upSince: t0, probeFailures: 3},
			ev:   ev(evExited, time.Second, "exited with code 137"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: 100 * time.Millisecond, upSince: t0, restarts: 1, probeFailures: 3},
			acts: []action{announceGone, starting("exited with code 137")},
		},
		{
			name: "the back-off stops growing at its max",
			from: lifecycle{state: stateReady, upSince: t0, restarts: 20},
			ev:   ev(evExited, time.Second, "exited with code 2"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: 30 * time.Second, upSince: t0, restarts: 21},
			acts: []action{announceGone, starting("exited with code 2")},
		},
		{
			name: "a restart comes up",
			from: lifecycle{state: stateRestarting, next: stateRestarting, restarts: 2, probeFailures: 3},
			ev:   ev(evReady, time.Minute, ""),
			want: lifecycle{state: stateReady, next: stateRestarting, upSince: at(time.Minute), restarts: 2},
			acts: []action{settle, reportReadyAt, announceReady},
		},
		{
			name: "a failed restart counts and backs off further",
			from: lifecycle{state: stateRestarting, next: stateRestarting, restarts: 2},
			ev:   ev(evStartFailed, time.Minute, "not ready after 1m0s: connection refused"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: 400 * time.Millisecond, restarts: 3},
			acts: []action{starting("restart: not ready after 1m0s: connection refused")},
		},
		{
			name: "a probe while starting is not expected and changes nothing",
			from: lifecycle{state: stateStarting},
			ev:   ev(evProbeOK, 0, ""),
			want: lifecycle{state: stateStarting},
		},
		{
			name: "an exit while backing off changes nothing",
			from: lifecycle{state: stateBackingOff, next: stateRestarting, wait: time.Second},
			ev:   ev(evExited, 0, "exited with code 2"),
			want: lifecycle{state: stateBackingOff, next: stateRestarting, wait: time.Second},
		},
		{
			name: "stopped is the end",
			from: lifecycle{state: stateStopped},
			ev:   ev(evReady, 0, ""),
			want: lifecycle{state: stateStopped},
		},
	}
	for _, s := range []lifecycleState{stateStarting, stateAdopting, stateReady, stateUnready, stateBackingOff, stateRestarting, stateStopped} {
		tests = append(tests, struct {
			name   string
			from   lifecycle
			ev     event
			policy *lifecyclePolicy
			want   lifecycle
			acts   []action
		}{
			name: "cancelled while " + s.String(),
			from: lifecycle{state: s, restarts: 1},
			ev:   ev(evCancelled, 0, ""),
			want: lifecycle{state: stateStopped, restarts: 1},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy
			if tt.policy != nil {
				p = *tt.policy
			}
			got, acts := transition(tt.from, tt.ev, p)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(lifecycle{})); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.acts, acts, cmp.AllowUnexported(action{})); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewLifecycle(t *testing.T) {
	if m, acts := newLifecycle(false, 4); m.state != stateStarting || m.restarts != 4 || len(acts) != 0 {
		t.Errorf("newLifecycle(fresh) = %+v, %v", m, acts)
	}
	// An adopted container's start-up boost ends before anything else.
	m, acts := newLifecycle(true, 0)
	if m.state != stateAdopting || !cmp.Equal(acts, []action{{kind: actSettle}}, cmp.AllowUnexported(action{})) {
		t.Errorf("newLifecycle(adopted) = %+v, %v", m, acts)
	}
}

func TestPolicyOf(t *testing.T) {
	c := DefaultConfig()
	want := lifecyclePolicy{
		failureThreshold: 3,
		backoff:          backoff.Policy{Base: 100 * time.Millisecond, Max: 30 * time.Second},
		backoffReset:     10 * time.Minute,
	}
	if diff := cmp.Diff(want, policyOf(c), cmp.AllowUnexported(lifecyclePolicy{})); diff != "" {
		t.Errorf("policyOf(DefaultConfig()) (-want +got):\n%s", diff)
	}
}
