package controllers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/leader"
	"github.com/surgeplatform/surge/controlplane/scheduler"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// Config configures the controllers. Make it with DefaultConfig.
type Config struct {
	// Resync is how often a pass runs with no change seen, to catch what
	// only time changes (stale nodes).
	Resync time.Duration
	// Debounce batches the events of a burst into one pass; longer saves
	// work, shorter reacts faster.
	Debounce time.Duration
	// NodeTimeout is how long a node may miss heartbeats before it is dead
	// and its replicas are replaced elsewhere, whatever gossip says: a node
	// that gossips but cannot reach the API. Agents beat every second.
	NodeTimeout time.Duration
	// LeaseConfirm is how long a node gossip declares dead must also have
	// missed heartbeats before it is dead and its replicas move: gossip's
	// fast failure detection misfires on a starved or lossy machine, and
	// moving every replica of a live node is an outage. With a beat a
	// second, 3s is two missed beats and a slow one; shorter moves a dead
	// node's replicas sooner, longer tolerates slower beats.
	LeaseConfirm time.Duration
	// LeaseTTL is the leader's etcd lease TTL in seconds: how long a
	// killed leader blocks the next one (leader.Config.TTL), and how soon
	// a leader cut off from etcd stops. 3s hands over within about 3.5s
	// (the lease, plus etcd's half-second expiry check) when the killed
	// server was not also etcd's leader; a new etcd leader extends every
	// lease by its full TTL and one election timeout (1s), which is why
	// the leader keeps etcd's leadership on another server (see
	// controlplane's etcd leader mover). etcd's floor is 2s; below 3s a
	// keep-alive every 2/3s risks losing the term on a loaded machine.
	LeaseTTL int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Resync: 5 * time.Second, Debounce: 5 * time.Millisecond, NodeTimeout: 30 * time.Second,
		LeaseConfirm: 3 * time.Second, LeaseTTL: 3}
}

// Manager runs the controllers while this server is the leader.
type Manager struct {
	cfg     Config
	store   *store.Store
	log     *slog.Logger
	clock   clock.Clock
	elector *leader.Elector
	tasks   []LeaderTask
	// live, when set, declares nodes dead as soon as gossip does.
	live Liveness
	// wake, when set, triggers a pass (gossip changed).
	wake <-chan struct{}
	// recheck is when the last pass said a node's verdict could turn
	// (zero: no such time); the loop runs a pass then. Only the loop's
	// goroutine uses it.
	recheck time.Time
}

// UseLiveness makes the node controller follow gossip: a node gossip
// declares dead is dead at once, not after NodeTimeout. wake signals a
// change. Call before Run.
func (m *Manager) UseLiveness(l Liveness, wake <-chan struct{}) { m.live, m.wake = l, wake }

// Liveness is what gossip says of nodes. State may be called from the
// controllers' goroutine at any time and must not block; ok is false for a
// node gossip has not seen.
type Liveness interface {
	State(node string) (state api.NodeState, ok bool)
}

// LeaderTask is a loop that runs only on the leader (the autoscaler): it
// is started when this server wins the election and its ctx ends when the
// server loses it. It returns when ctx ends.
type LeaderTask = leader.Task

// New returns a Manager. id names this server in the election; tasks run
// beside the controllers while this server leads. clk is the clock of the
// passes, the resync and the debounce; nil is the wall clock.
func New(cfg Config, st *store.Store, log *slog.Logger, clk clock.Clock, id string, tasks ...LeaderTask) (*Manager, error) {
	clk = clock.Or(clk)
	log = log.With("component", "controllers")
	lc := leader.DefaultConfig()
	lc.Key, lc.ID, lc.TTL, lc.Clock, lc.Log = electionKey, id, cfg.LeaseTTL, clk, log
	el, err := leader.New(st.Client(), lc)
	if err != nil {
		return nil, fmt.Errorf("controllers: %w", err)
	}
	return &Manager{cfg: cfg, store: st, log: log, clock: clk, elector: el, tasks: tasks}, nil
}

const electionKey = store.Prefix + "leader/controllers"

// Leader names the server that leads now (its election ID), or "" when
// none does: the oldest candidate's key under the election's prefix, as
// etcd's concurrency.Election orders them.
func Leader(ctx context.Context, cli *clientv3.Client) (string, error) {
	resp, err := cli.Get(ctx, electionKey+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("read the controllers' leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Run campaigns for leadership and, while leading, runs passes and the
// leader tasks, until ctx ends (package leader).
func (m *Manager) Run(ctx context.Context) error {
	return m.elector.Run(ctx, append([]LeaderTask{m.loop}, m.tasks...)...)
}

// loop runs a pass on every change and every resync period.
func (m *Manager) loop(ctx context.Context) error {
	wch := m.store.Client().Watch(clientv3.WithRequireLeader(ctx), store.Prefix, clientv3.WithPrefix())
	tick := m.clock.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	recheck := m.clock.NewTimer(m.cfg.Resync)
	defer recheck.Stop()
	for {
		if err := m.Pass(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("pass failed; retrying", "err", err)
		}
		// A node whose verdict may turn before the next resync (its lease
		// ages past LeaseConfirm) is looked at again right then.
		recheck.Stop()
		if !m.recheck.IsZero() {
			recheck.Reset(max(m.recheck.Sub(m.clock.Now()), 0) + time.Millisecond)
		}
		if err := m.waitForChange(ctx, wch, tick.Chan(), recheck.Chan()); err != nil {
			return err
		}
	}
}

// errWatchClosed ends a term whose watch etcd closed (it lost its
// leader): the next term watches anew.
var errWatchClosed = errors.New("controllers: watch closed")

// waitForChange blocks until a resync tick or a relevant change, then lets
// a burst of writes land (Debounce, on the clock) and drains what queued
// up behind it.
func (m *Manager) waitForChange(ctx context.Context, wch clientv3.WatchChan, tick, recheck <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			return nil
		case <-recheck:
			return nil
		case <-m.wake:
			return nil
		case wr, ok := <-wch:
			if !ok {
				return errWatchClosed
			}
			if !relevant(wr) {
				continue
			}
			if !clock.Sleep(ctx, m.clock, m.cfg.Debounce) {
				return ctx.Err()
			}
			for {
				select {
				case _, ok := <-wch:
					if !ok {
						return errWatchClosed
					}
				default:
					return nil
				}
			}
		}
	}
}

// relevant reports whether a watch batch touches what the controllers
// reconcile: the gateways' per-second stats, the nodes' heartbeats and the
// leader keys do not (heartbeats are read by every pass, and a node's
// lease ageing is what the recheck timer is for).
func relevant(wr clientv3.WatchResponse) bool {
	for _, ev := range wr.Events {
		k := string(ev.Kv.Key)
		if !strings.HasPrefix(k, store.StatsPrefix) && !strings.HasPrefix(k, store.LeasePrefix) &&
			!strings.HasPrefix(k, store.Prefix+"leader/") {
			return true
		}
	}
	return false
}

// state is one consistent read of what the controllers look at.
type state struct {
	functions []api.Function
	scales    []api.Scale
	replicas  []api.Replica
	// revisionList is every revision; revisions indexes it by key.
	revisionList []api.Revision
	revisions    map[api.Key]*api.Revision
	// nodes carry their last heartbeat in status.lastSeen.
	nodes []api.Node
}

func (m *Manager) read(ctx context.Context) (*state, error) {
	var s state
	var err error
	if s.functions, _, err = store.List[api.Function](ctx, m.store, store.Scope{}); err != nil {
		return nil, err
	}
	if s.scales, _, err = store.List[api.Scale](ctx, m.store, store.Scope{}); err != nil {
		return nil, err
	}
	if s.replicas, _, err = store.List[api.Replica](ctx, m.store, store.Scope{}); err != nil {
		return nil, err
	}
	if s.revisionList, _, err = store.List[api.Revision](ctx, m.store, store.Scope{}); err != nil {
		return nil, err
	}
	s.revisions = make(map[api.Key]*api.Revision, len(s.revisionList))
	for i := range s.revisionList {
		r := &s.revisionList[i]
		s.revisions[api.KeyOf(r)] = r
	}
	if s.nodes, _, err = store.List[api.Node](ctx, m.store, store.Scope{}); err != nil {
		return nil, err
	}
	leases, err := m.store.NodeLeases(ctx)
	if err != nil {
		return nil, err
	}
	for i := range s.nodes {
		store.WithLease(&s.nodes[i], leases)
	}
	return &s, nil
}

// Pass runs every controller once. It is exported for tests.
func (m *Manager) Pass(ctx context.Context) error {
	st, err := m.read(ctx)
	if err != nil {
		return err
	}
	return errors.Join(
		m.nodes(ctx, st),
		m.replicaSets(ctx, st),
		m.schedule(ctx, st),
		m.statuses(ctx, st),
		m.rollouts(ctx, st),
	)
}

// rollouts moves each function's traffic to its latest revision once that
// revision has a Ready replica (the count statuses just wrote), as
// Knative's routes follow the latest ready revision. Until then the
// traffic stays on the revision before, and a revision that never gets a
// Ready replica never takes any. Traffic a user set after the deploy
// stays as set (store.PromoteRevision).
func (m *Manager) rollouts(ctx context.Context, st *state) error {
	ready := map[api.Key]int32{}
	for _, sc := range st.scales {
		ready[api.KeyOf(&sc)] = sc.Status.ReadyReplicas
	}
	var errs []error
	for _, f := range st.functions {
		latest := f.Status.LatestRevision
		if latest == "" || latest == f.Status.LatestReadyRevision || ready[api.Key{Namespace: f.Metadata.Namespace, Name: latest}] == 0 {
			continue
		}
		moved, err := m.store.PromoteRevision(ctx, api.KeyOf(&f), latest)
		if err != nil {
			if !benign(err) {
				errs = append(errs, err)
			}
			continue
		}
		if moved {
			m.log.Info("rolled out", "function", f.Metadata.Name, "namespace", f.Metadata.Namespace,
				"revision", latest, "from", f.Status.LatestReadyRevision)
		}
	}
	return errors.Join(errs...)
}

// nodes marks nodes dead by nodeVerdict, and removes their replicas so
// that the replica controller makes new ones elsewhere. It sets m.recheck
// to the earliest time a live node's verdict could turn.
func (m *Manager) nodes(ctx context.Context, st *state) error {
	now := m.clock.Now()
	m.recheck = time.Time{}
	dead := map[string]bool{}
	var errs []error
	for i := range st.nodes {
		n := &st.nodes[i]
		if n.Status.State == api.NodeDead {
			dead[n.Metadata.Name] = true
			continue
		}
		gossipDead := false
		if m.live != nil {
			gs, ok := m.live.State(n.Metadata.Name)
			gossipDead = ok && gs == api.NodeDead
		}
		isDead, recheck := nodeVerdict(n.Status.LastSeen, gossipDead, now, m.cfg.LeaseConfirm, m.cfg.NodeTimeout)
		if !isDead {
			if !recheck.IsZero() && (m.recheck.IsZero() || recheck.Before(m.recheck)) {
				m.recheck = recheck
			}
			continue
		}
		m.log.Warn("node dead", "node", n.Metadata.Name, "lastSeen", n.Status.LastSeen, "gossip", gossipDead)
		n.Status.State = api.NodeDead
		if _, err := store.UpdateNodeStatus(ctx, m.store, n); err != nil {
			if !benign(err) {
				errs = append(errs, err)
			}
			continue
		}
		dead[n.Metadata.Name] = true
	}
	kept := st.replicas[:0]
	for _, r := range st.replicas {
		if r.Spec.NodeName != "" && dead[r.Spec.NodeName] {
			if err := store.Delete[api.Replica](ctx, m.store, api.KeyOf(&r), ""); err != nil && !benign(err) {
				errs = append(errs, err)
			}
			continue
		}
		kept = append(kept, r)
	}
	st.replicas = kept
	return errors.Join(errs...)
}

// replicaSets makes each revision's replica count match its Scale, and
// removes replicas whose revision is gone.
func (m *Manager) replicaSets(ctx context.Context, st *state) error {
	byRev := map[api.Key][]api.Replica{}
	for _, r := range st.replicas {
		k := revisionOf(&r)
		byRev[k] = append(byRev[k], r)
	}
	var errs []error
	for _, sc := range st.scales {
		k := api.KeyOf(&sc)
		rev := st.revisions[k]
		if rev == nil {
			continue
		}
		plan := planReplicas(sc.Spec.Replicas, byRev[k])
		delete(byRev, k)
		for _, name := range plan.remove {
			if err := store.Delete[api.Replica](ctx, m.store, api.Key{Namespace: sc.Metadata.Namespace, Name: name}, ""); err != nil && !benign(err) {
				errs = append(errs, err)
			}
		}
		for range plan.create {
			r := &api.Replica{
				Metadata: api.ObjectMeta{
					Name: sc.Metadata.Name + "-" + suffix(), Namespace: sc.Metadata.Namespace,
					Labels: map[string]string{api.LabelFunction: rev.Spec.Function, api.LabelRevision: rev.Metadata.Name},
				},
				Spec:   api.ReplicaSpec{Function: rev.Spec.Function, Revision: rev.Metadata.Name},
				Status: api.ReplicaStatus{Phase: api.ReplicaPending},
			}
			out, err := store.Create(ctx, m.store, r)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			st.replicas = append(st.replicas, *out)
		}
	}
	// Replicas of revisions that have no Scale any more.
	for _, reps := range byRev {
		for _, r := range reps {
			if err := store.Delete[api.Replica](ctx, m.store, api.KeyOf(&r), ""); err != nil && !benign(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// suffix is five random lower-case letters and digits, as Kubernetes
// names pods.
func suffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// schedule binds every unbound replica to a node: the scheduler places,
// this shell writes each binding and tells the scheduler it holds.
func (m *Manager) schedule(ctx context.Context, st *state) error {
	cluster := scheduler.NewCluster(st.nodes, st.replicas, st.revisionList)
	var errs []error
	for i := range st.replicas {
		r := &st.replicas[i]
		if r.Spec.NodeName != "" {
			continue
		}
		req, ok := cluster.Request(r)
		if !ok {
			continue
		}
		name, err := cluster.Pick(req)
		if err != nil {
			msg := err.Error()
			if r.Status.Message != msg {
				r.Status.Message = msg
				if _, err := store.UpdateReplicaStatus(ctx, m.store, r); err != nil && !benign(err) {
					errs = append(errs, err)
				}
			}
			continue
		}
		r.Spec.NodeName = name
		r.Status.Message = ""
		if _, err := store.Update(ctx, m.store, r); err != nil {
			if !benign(err) {
				errs = append(errs, err)
			}
			continue
		}
		cluster.Bind(name, req)
	}
	return errors.Join(errs...)
}

// statuses writes each Scale's observed replica counts.
func (m *Manager) statuses(ctx context.Context, st *state) error {
	type count struct{ all, ready int32 }
	counts := map[api.Key]count{}
	for _, r := range st.replicas {
		k := revisionOf(&r)
		c := counts[k]
		if active(&r) {
			c.all++
		}
		if r.Status.Phase == api.ReplicaReady {
			c.ready++
		}
		counts[k] = c
	}
	var errs []error
	for i := range st.scales {
		sc := &st.scales[i]
		c := counts[api.KeyOf(sc)]
		if sc.Status.Replicas == c.all && sc.Status.ReadyReplicas == c.ready {
			continue
		}
		sc.Status.Replicas, sc.Status.ReadyReplicas = c.all, c.ready
		if _, err := store.UpdateScaleStatus(ctx, m.store, sc); err != nil && !benign(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// revisionOf is the key of a replica's revision.
func revisionOf(r *api.Replica) api.Key {
	return api.Key{Namespace: r.Metadata.Namespace, Name: r.Spec.Revision}
}

// benign errors mean another writer got there first; the next pass sees
// what it wrote.
func benign(err error) bool {
	return errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrConflict)
}
