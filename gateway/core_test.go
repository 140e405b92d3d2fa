package gateway

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/backoff"
)

func eps(limits ...int64) []*Endpoint {
	var out []*Endpoint
	for i, l := range limits {
		out = append(out, &Endpoint{addr: string(rune('a' + i)), limit: l})
	}
	return out
}

func TestPickersRespectLimitsEjectionAndAvoid(t *testing.T) {
	now := time.Unix(100, 0).UnixNano()
	for _, p := range []Picker{P2C{}, LeastLoaded{}} {
		t.Run(strings.TrimPrefix(strings.TrimPrefix(typeName(p), "gateway."), "*"), func(t *testing.T) {
			if got := p.Pick(nil, nil, now, 1); got != nil {
				t.Errorf("pick of none = %v", got)
			}
			// Fill two replicas of limit 2: exactly four picks succeed.
			es := eps(2, 2)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range 4 {
				if p.Pick(es, nil, now, r.Uint64()) == nil {
					t.Fatalf("pick %d found no room", i)
				}
			}
			if e := p.Pick(es, nil, now, r.Uint64()); e != nil {
				t.Fatalf("pick beyond limits returned %s", e.addr)
			}
			for _, e := range es {
				if e.inflight.Load() != 2 {
					t.Errorf("%s in flight %d, want 2", e.addr, e.inflight.Load())
				}
			}
			// Ejected and draining replicas get nothing; avoid only as a last resort.
			es = eps(0, 0, 0)
			es[0].ejectedUntil.Store(now + 1)
			es[1].draining.Store(true)
			for range 20 {
				if e := p.Pick(es, nil, now, r.Uint64()); e != es[2] {
					t.Fatalf("picked %v, want c", e)
				}
			}
			if e := p.Pick(es, es[2], now, r.Uint64()); e != es[2] {
				t.Errorf("with only the avoided replica left, got %v", e)
			}
			es2 := eps(0, 0)
			for range 20 {
				if e := p.Pick(es2, es2[0], now, r.Uint64()); e != es2[1] {
					t.Fatalf("avoided replica picked while another had room")
				}
			}
		})
	}
}

func typeName(p Picker) string {
	switch p.(type) {
	case P2C:
		return "P2C"
	case LeastLoaded:
		return "LeastLoaded"
	}
	return "?"
}

func TestPickersPreferLeastLoadedAndBreakTiesAtRandom(t *testing.T) {
	now := int64(0)
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range []Picker{P2C{}, LeastLoaded{}} {
		es := eps(0, 0, 0)
		es[0].inflight.Store(5)
		es[1].inflight.Store(5)
		// LeastLoaded always takes c; P2C takes c whenever it samples it,
		// and never a loaded one over c.
		counts := map[string]int{}
		for range 300 {
			e := p.Pick(es, nil, now, r.Uint64())
			counts[e.addr]++
			e.inflight.Add(-1)
		}
		if _, ok := p.(LeastLoaded); ok && counts["c"] != 300 {
			t.Errorf("LeastLoaded picks %v", counts)
		}
		if counts["c"] < 150 {
			t.Errorf("%s picks %v: the least loaded should win most", typeName(p), counts)
		}
		// Ties: equal loads spread over every replica.
		es = eps(0, 0, 0, 0)
		counts = map[string]int{}
		for range 400 {
			e := p.Pick(es, nil, now, r.Uint64())
			counts[e.addr]++
			e.inflight.Add(-1)
		}
		for _, a := range []string{"a", "b", "c", "d"} {
			if counts[a] < 50 {
				t.Errorf("%s tie-breaking picks %v: not spread", typeName(p), counts)
			}
		}
	}
}

func TestPickTargetFollowsWeights(t *testing.T) {
	a, b := &revision{key: api.Key{Namespace: "d", Name: "a"}}, &revision{key: api.Key{Namespace: "d", Name: "b"}}
	ts := []target{{rev: a, cum: 10}, {rev: b, cum: 100}}
	counts := map[*revision]int{}
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		counts[pickTarget(ts, r.Uint64())]++
	}
	if counts[a] < 800 || counts[a] > 1200 {
		t.Errorf("10%% target got %d of 10000", counts[a])
	}
	if pickTarget(nil, 1) != nil {
		t.Error("pick from no target")
	}
}

func TestHostKeyAndPathKey(t *testing.T) {
	hosts := []struct {
		host, key string
		ok        bool
	}{
		{"hello.surge.localhost", "hello", true},
		{"hello.prod.surge.localhost", "hello.prod", true},
		{"HELLO.Surge.LocalHost:8080", "hello", true},
		{"hello.surge.localhost.", "hello", true},
		{"surge.localhost", "", false},
		{".surge.localhost", "", false},
		{"a.b.c.surge.localhost", "", false},
		{"hello.surge.localhostx", "", false},
		{"hellosurge.localhost", "", false},
		{"example.com", "", false},
		{"[::1]:80", "", false},
		{"", "", false},
	}
	for _, h := range hosts {
		key, _, ok := hostKey([]byte(h.host), "surge.localhost", nil)
		if ok != h.ok || string(key) != h.key {
			t.Errorf("hostKey(%q) = %q, %v; want %q, %v", h.host, key, ok, h.key, h.ok)
		}
	}
	paths := []struct {
		path, key, rest string
		ok              bool
	}{
		{"/fn/hello", "hello", "/", true},
		{"/fn/hello/", "hello", "/", true},
		{"/fn/hello/a/b", "hello", "/a/b", true},
		{"/fn/hello.prod/x", "hello.prod", "/x", true},
		{"/fn/", "", "", false},
		{"/fn", "", "", false},
		{"/fnx/hello", "", "", false},
		{"/", "", "", false},
	}
	for _, p := range paths {
		key, rest, ok := pathKey([]byte(p.path))
		if ok != p.ok || string(key) != p.key || string(rest) != p.rest {
			t.Errorf("pathKey(%q) = %q, %q, %v", p.path, key, rest, ok)
		}
	}
}

func TestCheckFraming(t *testing.T) {
	tests := []struct {
		raw  string
		want error
	}{
		{"Host: a\r\nContent-Length: 3\r\n\r\n", nil},
		{"Host: a\r\nTransfer-Encoding: chunked\r\n\r\n", nil},
		{"Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", errContentLengthAndChunked},
		{"transfer-encoding: chunked\r\ncontent-length: 3\r\n", errContentLengthAndChunked},
		{"Content-Length: 3\r\nContent-Length: 3\r\n", errDuplicateContentLength},
		{"X-A: 1\r\n 2\r\n", errObsFold},
		{"X-A: 1\r\n\t2\r\n", errObsFold},
		{"X A: 1\r\n", errBadHeaderName},
		{": 1\r\n", errBadHeaderName},
		{"no colon\r\n", errBadHeaderName},
		{"X-A: 1\x00\r\n", errBadHeaderValue},
		{"X-A: tab\tok\r\n", nil},
	}
	for _, tt := range tests {
		if got := checkFraming([]byte(tt.raw)); !errors.Is(got, tt.want) {
			t.Errorf("checkFraming(%q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

func TestRetryBudget(t *testing.T) {
	var b retryBudget
	b.init(newBudgetConfig(0.2, 2))
	// The burst is there at once.
	if !b.withdraw() || !b.withdraw() || b.withdraw() {
		t.Fatal("burst of 2 not honoured")
	}
	// Then one retry per five requests.
	for i := range 4 {
		b.deposit()
		if b.withdraw() {
			t.Fatalf("retry allowed after %d requests", i+1)
		}
	}
	b.deposit()
	if !b.withdraw() {
		t.Fatal("no retry after 5 requests at 20%")
	}
	// Deposits stop at the burst.
	for range 1000 {
		b.deposit()
	}
	n := 0
	for b.withdraw() {
		n++
	}
	if n != 2 {
		t.Errorf("%d retries saved up, want the burst of 2", n)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		f    attemptFacts
		want bool
	}{
		{"connect failed, POST", attemptFacts{failure: failConnect, replayable: true}, true},
		{"refused POST", attemptFacts{failure: failRefused, replayable: true}, true},
		{"refused, body consumed", attemptFacts{failure: failRefused}, false},
		{"pooled conn broke before a byte", attemptFacts{failure: failNotSent, replayable: true}, true},
		{"POST sent, conn broke", attemptFacts{failure: failBroken, replayable: true}, false},
		{"GET sent, conn broke (the replica died)", attemptFacts{failure: failBroken, idempotent: true, replayable: true}, true},
		{"GET sent, streamed body consumed", attemptFacts{failure: failBroken, idempotent: true}, false},
		{"GET timed out", attemptFacts{failure: failTimeout, idempotent: true, replayable: true}, false},
		{"bad answer", attemptFacts{failure: failProtocol, idempotent: true, replayable: true}, false},
		{"client body broke", attemptFacts{failure: failBody, replayable: true}, false},
	}
	for _, tt := range tests {
		if got := retryable(tt.f); got != tt.want {
			t.Errorf("%s: retryable = %v, want %v", tt.name, got, tt.want)
		}
	}
	for m, want := range map[string]bool{"GET": true, "HEAD": true, "PUT": true, "DELETE": true, "OPTIONS": true, "TRACE": true, "POST": false, "PATCH": false} {
		if isIdempotent([]byte(m)) != want {
			t.Errorf("isIdempotent(%s) != %v", m, want)
		}
	}
}

func TestEjection(t *testing.T) {
	p := ejectPolicy{after: 5, backoff: backoff.Policy{Base: time.Second, Max: 8 * time.Second}, maxPercent: 50}
	now := time.Unix(1000, 0)
	es := eps(0, 0, 0, 0)
	a := es[0]
	for i := range 4 {
		if a.failed(now, es, p, false) {
			t.Fatalf("ejected after %d failures", i+1)
		}
	}
	// A success between failures starts the streak over.
	a.succeeded()
	for i := range 4 {
		if a.failed(now, es, p, false) {
			t.Fatalf("ejected after a success and %d failures", i+1)
		}
	}
	if !a.failed(now, es, p, false) {
		t.Fatal("not ejected after 5 failures in a row")
	}
	if a.eligible(now.Add(999*time.Millisecond).UnixNano()) || !a.eligible(now.Add(time.Second).UnixNano()) {
		t.Error("first ejection is not 1s")
	}
	// On probation: the next failure ejects again, for twice as long.
	now = now.Add(time.Second)
	if !a.failed(now, es, p, false) {
		t.Fatal("not ejected again on probation")
	}
	if a.eligible(now.Add(1999*time.Millisecond).UnixNano()) || !a.eligible(now.Add(2*time.Second).UnixNano()) {
		t.Error("second ejection is not 2s")
	}
	// A success ends probation.
	a.succeeded()
	if a.ejections.Load() != 0 || a.fails.Load() != 0 {
		t.Error("succeeded did not reset")
	}
	// At most half of the replicas: b is ejected, c may not be as well... a still is.
	b, c := es[1], es[2]
	for range 5 {
		b.failed(now, es, p, false)
	}
	ejectedC := false
	for range 5 {
		ejectedC = c.failed(now, es, p, false) || ejectedC
	}
	if ejectedC {
		t.Error("a third of four replicas ejected: more than 50%")
	}
	if dead := c.failed(now, es, p, true); dead {
		t.Error("a dead replica ejected beyond 50%")
	}
	if got := p.backoff.Delay(11); got != 8*time.Second {
		t.Errorf("backoff cap: %v", got)
	}
	// A single replica is never ejected.
	one := eps(0)
	for range 10 {
		if one[0].failed(now, one, p, false) || one[0].failed(now, one, p, true) {
			t.Fatal("the only replica was ejected")
		}
	}
}

// TestDeadReplicaEjectedUntilReportedReady: a refused connection ejects
// a replica at once, for as long as its sources do not report it Ready
// again (EjectMaxBackoff at most).
func TestDeadReplicaEjectedUntilReportedReady(t *testing.T) {
	p := ejectPolicy{after: 5, backoff: backoff.Policy{Base: time.Second, Max: 30 * time.Second}, maxPercent: 50}
	r := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 3, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	ready := func(replica, addr string) EndpointInfo {
		return EndpointInfo{Namespace: "default", Replica: replica, Function: "hello", Revision: "hello-00001", Addr: addr, Phase: api.ReplicaReady}
	}
	r.Update(func(s *State) {
		s.SetFunction(FunctionInfo{Namespace: "default", Name: "hello"})
		s.SetRevision(RevisionInfo{Namespace: "default", Name: "hello-00001", Function: "hello", Number: 1})
		s.SetEndpoint(ready("a", "10.0.0.1:8080"))
		s.SetEndpoint(ready("b", "10.0.0.2:8080"))
	})
	es := r.Load().routes["hello"].targets[0].rev.endpoints()
	a := es[0]
	now := time.Unix(1000, 0)
	if !a.failed(now, es, p, true) {
		t.Fatal("a refused connection did not eject at once")
	}
	if a.eligible(now.Add(29*time.Second).UnixNano()) || !a.eligible(now.Add(30*time.Second).UnixNano()) {
		t.Error("a dead replica's ejection is not EjectMaxBackoff when no report comes")
	}
	// Another replica's report does not bring it back.
	r.Update(func(s *State) { s.SetEndpoint(ready("b", "10.0.0.2:8080")) })
	if a.eligible(now.Add(time.Second).UnixNano()) {
		t.Error("a dead replica returned on another replica's report")
	}
	// Its own report does.
	r.Update(func(s *State) { s.SetEndpoint(ready("a", "10.0.0.1:8080")) })
	if !a.eligible(now.UnixNano()) || a.ejections.Load() != 0 {
		t.Error("a dead replica reported Ready again is still ejected")
	}
	// A failure after it is a first failure, not probation.
	if a.failed(now, es, p, false) {
		t.Error("a replica reported Ready again was ejected by one failure")
	}
}

func TestRoutesBuild(t *testing.T) {
	r := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 3, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	r.Update(func(s *State) {
		s.SetFunction(FunctionInfo{Namespace: "default", Name: "hello"})
		s.SetFunction(FunctionInfo{Namespace: "prod", Name: "hello", DefaultRevision: "hello-00001"})
		for i, ns := range []string{"default", "default", "prod", "prod"} {
			n := int64(i%2 + 1)
			s.SetRevision(RevisionInfo{Namespace: ns, Name: "hello-0000" + string(rune('0'+n)), Function: "hello", Number: n, Concurrency: 4, Timeout: time.Second})
		}
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r1", Function: "hello", Revision: "hello-00002", Node: "n1", Addr: "10.0.0.2:8080", Phase: api.ReplicaReady})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r0", Function: "hello", Revision: "hello-00002", Node: "n2", Addr: "10.0.0.1:8080", Phase: api.ReplicaReady})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r2", Function: "hello", Revision: "hello-00002", Node: "n2", Addr: "10.0.0.3:8080", Phase: api.ReplicaStarting})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r3", Function: "hello", Revision: "hello-00002", Node: "n2", Addr: "10.0.0.4:8080", Phase: api.ReplicaTerminating})
		s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "r9", Function: "hello", Revision: "unknown", Addr: "10.0.0.9:8080", Phase: api.ReplicaReady})
	})
	tbl := r.Load()
	keys := func() []string {
		var ks []string
		for k := range tbl.routes {
			ks = append(ks, k)
		}
		return ks
	}
	if diff := cmp.Diff([]string{"hello", "hello.default", "hello.prod"}, keys(), sortStrings); diff != "" {
		t.Errorf("route keys (-want +got):\n%s", diff)
	}
	def := tbl.routes["hello"]
	if def != tbl.routes["hello.default"] {
		t.Error("default namespace keys differ")
	}
	// No traffic and no latest named: the highest number takes all.
	if len(def.targets) != 1 || def.targets[0].rev.key.Name != "hello-00002" {
		t.Errorf("default targets %+v", def.targets)
	}
	if tbl.routes["hello.prod"].targets[0].rev.key.Name != "hello-00001" {
		t.Error("prod does not follow its DefaultRevision")
	}
	rev := def.targets[0].rev
	var addrs []string
	for _, e := range rev.endpoints() {
		addrs = append(addrs, e.addr)
		if e.limit != 4 {
			t.Errorf("endpoint limit %d", e.limit)
		}
	}
	if diff := cmp.Diff([]string{"10.0.0.1:8080", "10.0.0.2:8080"}, addrs); diff != "" {
		t.Errorf("ready endpoints (-want +got):\n%s", diff)
	}
	before := rev.endpoints()[0]

	// Traffic split; endpoint identity survives; node death drops endpoints.
	r.Update(func(s *State) {
		s.SetTraffic("default", "hello", []api.TrafficTarget{{Revision: "hello-00001", Percent: 30}, {Revision: "hello-00002", Percent: 70}, {Revision: "gone", Percent: 10}})
		s.DeleteNode("n1")
	})
	tbl = r.Load()
	ts := tbl.routes["hello"].targets
	if len(ts) != 2 || ts[0].cum != 30 || ts[1].cum != 100 {
		t.Errorf("targets %+v", ts)
	}
	if got := rev.endpoints(); len(got) != 1 || got[0] != before {
		t.Errorf("after node death: %v (identity kept: %v)", got, len(got) == 1 && got[0] == before)
	}

	// A removed revision is marked gone and its waiters woken.
	w := acquireWaiter()
	if rev.queue.push(w) != pushed {
		t.Fatal("push refused")
	}
	r.Update(func(s *State) { s.DeleteRevision("default", "hello-00002") })
	if !rev.gone.Load() {
		t.Error("removed revision not marked gone")
	}
	select {
	case <-w.ch:
	default:
		t.Error("waiter of a removed revision not woken")
	}
	if !before.draining.Load() {
		t.Error("endpoint of a removed revision not draining")
	}
	if n := len(r.Load().routes["hello"].targets); n != 1 {
		t.Errorf("%d targets after removal", n)
	}
}

var sortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestWaitQueue(t *testing.T) {
	room := &queueRoom{max: 3}
	q := waitQueue{max: 2, room: room}
	a, b, c := acquireWaiter(), acquireWaiter(), acquireWaiter()
	if q.push(a) != pushed || q.push(b) != pushed || q.push(c) != revisionFull {
		t.Fatal("queue of 2 did not take exactly 2")
	}
	q.wakeOne()
	select {
	case <-a.ch:
	default:
		t.Fatal("FIFO: a not woken first")
	}
	if q.remove(a) {
		t.Error("a still queued after wake")
	}
	// a lost the race for its slot: back to the front, ahead of b.
	q.requeue(a)
	q.wakeOne()
	select {
	case <-a.ch:
	default:
		t.Fatal("a requeued request is not woken first")
	}
	if !q.remove(b) || q.length() != 0 || room.n.Load() != 0 {
		t.Errorf("remove b: length %d, room taken %d", q.length(), room.n.Load())
	}
	q.wakeOne() // no waiter: nothing happens

	// The gateway's room is shared by its revisions' queues.
	other := waitQueue{max: 10, room: room}
	for _, w := range []*waiter{a, b, c} {
		if other.push(w) != pushed {
			t.Fatal("a queue with room refused")
		}
	}
	if q.push(acquireWaiter()) != gatewayFull {
		t.Error("the gateway's room is not shared")
	}
	other.wake(2)
	if other.length() != 1 || room.n.Load() != 1 {
		t.Errorf("after waking 2 of 3: length %d, room taken %d", other.length(), room.n.Load())
	}
	other.wakeAll()
	if other.length() != 0 || room.n.Load() != 0 {
		t.Errorf("after waking all: length %d, room taken %d", other.length(), room.n.Load())
	}
}

func TestStatsCollector(t *testing.T) {
	epoch := time.Unix(0, 0)
	c := newStatsCollector(epoch)
	rev := &revision{key: api.Key{Namespace: "default", Name: "hello-00001"}, function: "hello"}
	at := func(ms int) int64 { return int64(ms) * 1000 }
	// Window [0, 1000ms): one request for the whole second, another for
	// 500ms, one arriving at 900ms still in flight: 1 + 0.5 + 0.1 = 1.6.
	rev.stats.begin(at(0))
	rev.stats.begin(at(100))
	rev.stats.end(at(600))
	rev.stats.begin(at(900))
	st := c.collect(epoch.Add(time.Second), []*revision{rev})
	want := []RevisionStats{{Namespace: "default", Function: "hello", Revision: "hello-00001", Window: time.Second,
		AverageConcurrency: 1.6, Requests: 3, InFlight: 2}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("first window (-want +got):\n%s", diff)
	}
	// Window [1000, 2000): both still in flight until 1500, then one.
	rev.stats.end(at(1500))
	st = c.collect(epoch.Add(2*time.Second), []*revision{rev})
	want[0].AverageConcurrency, want[0].Requests, want[0].InFlight = 1.5, 0, 1
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("second window (-want +got):\n%s", diff)
	}
	// A clock read that lost a race (an earlier time) adds no negative area.
	rev.stats.end(at(1999))
	st = c.collect(epoch.Add(3*time.Second), []*revision{rev})
	if st[0].AverageConcurrency != 0 || st[0].InFlight != 0 {
		t.Errorf("third window %+v", st[0])
	}
}

func TestConfigValidateReportsEveryField(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Domain = "bad domain"
	cfg.MaxHeaderBytes = 10
	cfg.RetryBudgetRatio = 2
	cfg.Policy = "fastest"
	cfg.RequestBodyTimeout = -time.Second
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}
	err := cfg.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{"Domain = bad domain", "MaxHeaderBytes = 10", "RetryBudgetRatio = 2", "Policy = fastest",
		"RequestBodyTimeout = -1s", "TrustedProxies[1] = invalid Prefix"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %q", err, f)
		}
	}
	if _, err := New(cfg, Deps{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New accepted a bad config: %v", err)
	}
	// Zero values take defaults.
	if _, err := New(Config{}, Deps{}); err != nil {
		t.Errorf("New(Config{}) = %v", err)
	}
}

// TestRelistKeepsGossipEndpoints: a control-plane relist (after a
// compacted watch) drops what the control plane gave, and keeps the
// endpoints gossip announced that etcd does not show yet.
func TestRelistKeepsGossipEndpoints(t *testing.T) {
	s := newState()
	s.SetEndpoint(EndpointInfo{Namespace: "default", Replica: "from-etcd", Addr: "10.0.0.1:8080", Phase: api.ReplicaReady})
	s.SetGossipEndpoint(EndpointInfo{Namespace: "default", Replica: "from-gossip", Addr: "10.0.0.2:8080", Phase: api.ReplicaReady})
	s.ClearEndpoints()
	var left []string
	for k := range s.endpoints {
		left = append(left, k.Name)
	}
	if diff := cmp.Diff([]string{"from-gossip"}, left); diff != "" {
		t.Errorf("endpoints after a relist (-want +got):\n%s", diff)
	}
}

// TestGossipEndpointsRoutedOnlyWhereTheControlPlaneAgrees: every member of
// gossip holds its key, a gateway too, so what gossip announces is routed
// only where it agrees with what the control plane assigned: the replica
// exists, bound to the node that announces it, at an address in that
// node's pod subnet (the one the control plane knows, once it knows one),
// and it serves the revision the control plane says. A replica still
// starting in the control plane's eyes is routed at once on gossip's word.
func TestGossipEndpointsRoutedOnlyWhereTheControlPlaneAgrees(t *testing.T) {
	r := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 3, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	bound := func(replica, node, addr string, phase api.ReplicaPhase) EndpointInfo {
		return EndpointInfo{Namespace: "default", Replica: replica, Function: "hello", Revision: "hello-00001", Node: node, Addr: addr, Phase: phase}
	}
	announced := func(replica, node, addr string) EndpointInfo {
		// What gossip says it serves is ignored: the control plane's word.
		return EndpointInfo{Namespace: "default", Replica: replica, Function: "other", Revision: "other-00001", Node: node, Addr: addr, Phase: api.ReplicaReady}
	}
	r.Update(func(s *State) {
		for _, fn := range []string{"hello", "other"} {
			s.SetFunction(FunctionInfo{Namespace: "default", Name: fn})
			s.SetRevision(RevisionInfo{Namespace: "default", Name: fn + "-00001", Function: fn, Number: 1})
		}
		s.SetNodeSubnet("n1", netip.MustParsePrefix("10.244.1.0/24"))
		s.SetNodeSubnet("n2", netip.MustParsePrefix("10.244.2.0/24"))
		s.SetEndpoint(bound("good", "n1", "", api.ReplicaStarting))
		s.SetEndpoint(bound("known-addr", "n1", "10.244.1.7:8080", api.ReplicaStarting))
		s.SetEndpoint(bound("elsewhere", "n2", "", api.ReplicaPending))

		s.SetGossipEndpoint(announced("good", "n1", "10.244.1.5:8080"))
		s.SetGossipEndpoint(announced("known-addr", "n1", "10.244.1.66:8080")) // not the address etcd holds
		s.SetGossipEndpoint(announced("elsewhere", "n1", "10.244.1.6:8080"))   // bound to n2
		s.SetGossipEndpoint(announced("nobody", "n1", "10.244.1.8:8080"))      // no such replica
		s.SetGossipEndpoint(announced("elsewhere", "n2", "10.0.0.1:8080"))     // outside n2's subnet
	})
	routed := func() []string {
		var got []string
		for _, fn := range []string{"hello", "other"} {
			for _, ep := range r.Load().routes[fn].targets[0].rev.endpoints() {
				got = append(got, fn+" "+ep.addr)
			}
		}
		return got
	}
	if diff := cmp.Diff([]string{"hello 10.244.1.5:8080"}, routed()); diff != "" {
		t.Errorf("routed after gossip's announcements (-want +got):\n%s", diff)
	}

	// The control plane moves the replica to another node: gossip's word
	// for the old one no longer counts.
	r.Update(func(s *State) { s.SetEndpoint(bound("good", "n2", "", api.ReplicaStarting)) })
	if got := routed(); len(got) != 0 {
		t.Errorf("routed after the replica was bound elsewhere: %v, want nothing", got)
	}
	// A node's subnet changed under an endpoint: no longer routed.
	r.Update(func(s *State) {
		s.SetEndpoint(bound("good", "n1", "", api.ReplicaStarting))
		s.SetGossipEndpoint(announced("good", "n1", "10.244.1.5:8080"))
		s.SetNodeSubnet("n1", netip.MustParsePrefix("10.244.9.0/24"))
	})
	if got := routed(); len(got) != 0 {
		t.Errorf("routed outside the node's new subnet: %v, want nothing", got)
	}
	// Gossip saying a replica is gone counts only from its node.
	r.Update(func(s *State) {
		s.SetNodeSubnet("n1", netip.MustParsePrefix("10.244.1.0/24"))
		s.DeleteGossipEndpoint("default", "good", "n2")
	})
	if diff := cmp.Diff([]string{"hello 10.244.1.5:8080"}, routed()); diff != "" {
		t.Errorf("routed after another node said the replica is gone (-want +got):\n%s", diff)
	}
	r.Update(func(s *State) { s.DeleteGossipEndpoint("default", "good", "n1") })
	if got := routed(); len(got) != 0 {
		t.Errorf("routed after its node said it is gone: %v, want nothing", got)
	}
	// The control plane lists a replica Ready first (an agent in host
	// networking, whose replicas are on loopback, outside any subnet):
	// gossip's later word does not displace it.
	r.Update(func(s *State) {
		s.SetEndpoint(bound("loopback", "n1", "127.0.0.1:40001", api.ReplicaReady))
		s.SetGossipEndpoint(announced("loopback", "n1", "127.0.0.1:40001"))
	})
	if diff := cmp.Diff([]string{"hello 127.0.0.1:40001"}, routed()); diff != "" {
		t.Errorf("routed after gossip repeated what the control plane said (-want +got):\n%s", diff)
	}
}
