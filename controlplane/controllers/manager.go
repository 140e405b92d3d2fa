package controllers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/leader"
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
	// RolloutTick is how often the canary loop judges the canaries in
	// progress: how late a step ends, or a failing canary is seen. Each
	// judgment reads the gateways' reports; with no canary in progress a
	// tick reads only the rollouts.
	RolloutTick time.Duration
	// StatsMaxAge is how old a gateway's last report may be and still
	// count for a canary (the autoscaler's StatsMaxAge).
	StatsMaxAge time.Duration
	// BindConcurrency is how many bindings the scheduler writes at once.
	// etcd commits concurrent transactions in one batch (one fsync), so a
	// burst of placements binds in a few round trips rather than one per
	// replica; more costs the server more memory and goroutines in a burst.
	BindConcurrency int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Resync: 5 * time.Second, Debounce: 5 * time.Millisecond, NodeTimeout: 30 * time.Second,
		LeaseConfirm: 3 * time.Second, LeaseTTL: 3, BindConcurrency: 32, RolloutTick: time.Second, StatsMaxAge: 3 * time.Second}
}

// Manager runs the controllers while this server is the leader.
type Manager struct {
	cfg     Config
	store   *store.Store
	log     *slog.Logger
	clock   clock.Clock
	elector *leader.Elector
	tasks   []LeaderTask
	metrics *metrics
	// live, when set, declares nodes dead as soon as gossip does.
	live Liveness
	// wake, when set, triggers a pass (gossip changed).
	wake <-chan struct{}
	// outcomes is the gateways' counters the canary loop judges by.
	outcomes OutcomeSource
	// testEvidence is CanaryPass's, between calls.
	testEvidence *evidence
	// canariesLive is whether the last pass's cache held a canary in
	// progress, or a pass started one since: the canary loop reads the
	// rollouts and the gateways' reports only then. Set by the loop's
	// goroutine, read by the canary loop's.
	canariesLive atomic.Bool
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
// passes, the resync and the debounce; nil is the wall clock. The
// controllers' and the scheduler's metrics go to reg (nil: nowhere).
func New(cfg Config, st *store.Store, log *slog.Logger, clk clock.Clock, reg prometheus.Registerer, id string, tasks ...LeaderTask) (*Manager, error) {
	clk = clock.Or(clk)
	d := DefaultConfig()
	if cfg.BindConcurrency <= 0 {
		cfg.BindConcurrency = d.BindConcurrency
	}
	if cfg.RolloutTick <= 0 {
		cfg.RolloutTick = d.RolloutTick
	}
	if cfg.StatsMaxAge <= 0 {
		cfg.StatsMaxAge = d.StatsMaxAge
	}
	log = log.With("component", "controllers")
	lc := leader.DefaultConfig()
	lc.Key, lc.ID, lc.TTL, lc.Clock, lc.Log = electionKey, id, cfg.LeaseTTL, clk, log
	el, err := leader.New(st.Client(), lc)
	if err != nil {
		return nil, fmt.Errorf("controllers: %w", err)
	}
	mt, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("controllers: %w", err)
	}
	return &Manager{cfg: cfg, store: st, log: log, clock: clk, elector: el, tasks: tasks, metrics: mt,
		outcomes: store.NewGatewayLoad(st, cfg.StatsMaxAge)}, nil
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
	return m.elector.Run(ctx, append([]LeaderTask{m.loop, m.canaries}, m.tasks...)...)
}

// loop reads the state into a cache that its watch keeps current, and
// runs a pass on every change and every resync period.
func (m *Manager) loop(ctx context.Context) error {
	m.metrics.leader.Set(1)
	defer m.metrics.leader.Set(0)
	c, err := readCache(ctx, m.store, m.clock, true)
	if err != nil {
		return err
	}
	tick := m.clock.NewTicker(m.cfg.Resync)
	defer tick.Stop()
	recheck := m.clock.NewTimer(m.cfg.Resync)
	defer recheck.Stop()
	for {
		start := m.clock.Now()
		if err := c.sync(ctx); err != nil {
			return err
		}
		synced := m.clock.Now()
		if err := m.pass(ctx, c); err != nil && ctx.Err() == nil {
			m.log.Warn("pass failed; retrying", "err", err)
		}
		m.metrics.passDuration.Observe(m.clock.Since(synced).Seconds())
		m.log.Debug("pass", "revision", c.rev, "sync", synced.Sub(start), "took", m.clock.Since(synced),
			"replicas", len(c.replicas), "unbound", len(c.unbound))
		// A node whose verdict may turn before the next resync (its lease
		// ages past LeaseConfirm) is looked at again right then.
		recheck.Stop()
		if !m.recheck.IsZero() {
			recheck.Reset(max(m.recheck.Sub(m.clock.Now()), 0) + time.Millisecond)
		}
		if err := m.waitForChange(ctx, c.wch, c.apply, tick.Chan(), recheck.Chan()); err != nil {
			return err
		}
	}
}

// waitForChange blocks until a resync tick or a relevant change, then lets
// a burst of writes land (Debounce, on the clock) and drains what queued
// up behind it. Every watch response it takes goes to apply (nil: none).
func (m *Manager) waitForChange(ctx context.Context, wch clientv3.WatchChan, apply func(clientv3.WatchResponse) error,
	tick, recheck <-chan time.Time) error {
	take := func(wr clientv3.WatchResponse) error {
		if apply == nil {
			return nil
		}
		return apply(wr)
	}
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
			if err := take(wr); err != nil {
				return err
			}
			if !relevant(wr) {
				continue
			}
			if !clock.Sleep(ctx, m.clock, m.cfg.Debounce) {
				return ctx.Err()
			}
			for {
				select {
				case wr, ok := <-wch:
					if !ok {
						return errWatchClosed
					}
					if err := take(wr); err != nil {
						return err
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

// Pass reads the whole state from etcd and runs every controller once,
// as the leader's loop does on its cache. It is exported for tests.
func (m *Manager) Pass(ctx context.Context) error {
	c, err := readCache(ctx, m.store, m.clock, false)
	if err != nil {
		return err
	}
	return m.pass(ctx, c)
}

// pass runs every controller once over c, which each keeps current with
// what it writes.
func (m *Manager) pass(ctx context.Context, c *cache) error {
	live := false
	for _, ro := range c.rollouts {
		live = live || (ro.Status.Phase == api.RolloutProgressing && ro.Spec.Canary != nil)
	}
	m.canariesLive.Store(live)
	return errors.Join(
		m.metrics.countErr(ctrlNodes, m.nodes(ctx, c)),
		m.metrics.countErr(ctrlReplicas, m.replicaSets(ctx, c)),
		m.metrics.countErr(ctrlScheduler, m.schedule(ctx, c)),
		m.metrics.countErr(ctrlStatuses, m.statuses(ctx, c)),
		m.metrics.countErr(ctrlRollouts, m.rollouts(ctx, c)),
		m.metrics.countErr(ctrlPrune, m.prune(ctx, c)),
	)
}

// prune deletes the revisions a function's KeepRevisions lets go
// (api.Prunable: never one that takes traffic, has a tag, is the latest or
// a rollout's way back), for the functions the cache says have some; the
// store decides again on a fresh read (store.PruneRevisions).
func (m *Manager) prune(ctx context.Context, c *cache) error {
	names := map[api.Key][]string{}
	for k, r := range c.revisions {
		fk := api.Key{Namespace: k.Namespace, Name: r.Spec.Function}
		names[fk] = append(names[fk], k.Name)
	}
	var ops []writeOp
	for k, f := range c.functions {
		keep := int(f.Spec.KeepRevisions)
		if keep <= 0 || len(names[k]) <= keep || len(api.Prunable(f, c.traffic[k], c.rollouts[k], names[k], keep)) == 0 {
			continue
		}
		ops = append(ops, func(ctx context.Context) (func(), error) {
			gone, err := m.store.PruneRevisions(ctx, k, keep)
			if benign(err) {
				err = nil
			}
			if len(gone) > 0 {
				m.log.Info("pruned revisions", "function", k.Name, "namespace", k.Namespace, "revisions", gone, "keep", keep)
			}
			return nil, err
		})
	}
	return m.write(ctx, ops)
}

// UseOutcomes replaces where the canary loop reads the gateways' counters
// (by default the store's reports). Call before Run; for tests.
func (m *Manager) UseOutcomes(src OutcomeSource) { m.outcomes = src }

// rollouts starts moving each function's traffic to its latest revision
// once that revision has a Ready replica (the count statuses just wrote),
// as Knative's routes follow the latest ready revision: all of it at once,
// or, with a canary in the function's spec, its first step, which the
// canary loop (rollouts.go) takes on. Until then the traffic stays on the
// revision before, and a revision that never gets a Ready replica never
// takes any. Traffic a user set after the deploy stays as set
// (store.PromoteRevision).
func (m *Manager) rollouts(ctx context.Context, c *cache) error {
	var ops []writeOp
	for _, f := range c.functions {
		latest := f.Status.LatestRevision
		if latest == "" || latest == f.Status.LatestReadyRevision {
			continue
		}
		sc := c.scales[api.Key{Namespace: f.Metadata.Namespace, Name: latest}]
		if sc == nil || sc.Status.ReadyReplicas == 0 {
			continue
		}
		from := f.Status.LatestReadyRevision
		ops = append(ops, func(ctx context.Context) (func(), error) {
			moved, err := m.store.PromoteRevision(ctx, api.KeyOf(f), latest)
			if err != nil {
				if benign(err) {
					err = nil
				}
				return nil, err
			}
			if moved {
				m.metrics.rollouts.Inc()
				how := "all at once"
				if f.Spec.Canary != nil && from != "" {
					how = "canary " + f.Spec.Canary.String()
					m.canariesLive.Store(true) // before the watch tells the next pass
				}
				m.log.Info("rolling out", "function", f.Metadata.Name, "namespace", f.Metadata.Namespace,
					"revision", latest, "from", from, "how", how)
			}
			return nil, nil
		})
	}
	return m.write(ctx, ops)
}

// writeOp is one write of a pass. It may run on any goroutine, with
// others at once; the function it returns, if any, applies what it wrote
// to the cache, back on the loop's goroutine.
type writeOp func(ctx context.Context) (apply func(), err error)

// write runs a pass's writes, BindConcurrency at a time — etcd commits
// concurrent transactions together, so a thousand replicas are made in a
// few round trips rather than a thousand — then applies their results to
// the cache in order.
func (m *Manager) write(ctx context.Context, ops []writeOp) error {
	applies := make([]func(), len(ops))
	errs := make([]error, len(ops))
	if len(ops) == 1 {
		applies[0], errs[0] = ops[0](ctx)
	} else {
		var g errgroup.Group
		g.SetLimit(m.cfg.BindConcurrency)
		for i, op := range ops {
			g.Go(func() error {
				applies[i], errs[i] = op(ctx)
				return nil
			})
		}
		_ = g.Wait()
	}
	for _, apply := range applies {
		if apply != nil {
			apply()
		}
	}
	return errors.Join(errs...)
}

// nodes marks nodes dead by nodeVerdict, and removes their replicas so
// that the replica controller makes new ones elsewhere. It sets m.recheck
// to the earliest time a live node's verdict could turn.
func (m *Manager) nodes(ctx context.Context, c *cache) error {
	now := m.clock.Now()
	m.recheck = time.Time{}
	dead := map[string]bool{}
	var errs []error
	for name, n := range c.nodes {
		if n.Status.State == api.NodeDead {
			dead[name] = true
			continue
		}
		gossipDead := false
		if m.live != nil {
			gs, ok := m.live.State(name)
			gossipDead = ok && gs == api.NodeDead
		}
		lastSeen := c.lastSeen(n)
		isDead, recheck := nodeVerdict(lastSeen, gossipDead, now, m.cfg.LeaseConfirm, m.cfg.NodeTimeout)
		if !isDead {
			if !recheck.IsZero() && (m.recheck.IsZero() || recheck.Before(m.recheck)) {
				m.recheck = recheck
			}
			continue
		}
		m.log.Warn("node dead", "node", name, "lastSeen", lastSeen, "gossip", gossipDead)
		next := *n
		next.Status.State, next.Status.LastSeen = api.NodeDead, lastSeen
		out, err := store.UpdateNodeStatus(ctx, m.store, &next)
		if err != nil {
			if !benign(err) {
				errs = append(errs, err)
			}
			continue
		}
		c.setNode(out)
		dead[name] = true
		m.metrics.nodesDead.Inc()
	}
	if len(dead) == 0 {
		return errors.Join(errs...)
	}
	var ops []writeOp
	for k, r := range c.replicas {
		if r.Spec.NodeName != "" && dead[r.Spec.NodeName] {
			ops = append(ops, m.deleteReplica(c, k))
		}
	}
	return errors.Join(append(errs, m.write(ctx, ops))...)
}

// createReplica is the write that makes replica r: placed at once when a
// node fits, bound in the transaction that creates it; else, or when that
// node changed meanwhile, unbound, for schedule.
func (m *Manager) createReplica(c *cache, r *api.Replica) writeOp {
	key := api.KeyOf(r)
	req, ok := c.cluster.Request(r)
	node := ""
	if ok {
		if name, err := c.cluster.Pick(req); err == nil {
			node = name
			c.cluster.Assume(key, node, req)
		}
	}
	if node == "" {
		return func(ctx context.Context) (func(), error) {
			out, err := store.Create(ctx, m.store, r)
			if err != nil {
				return nil, err
			}
			m.metrics.replicas.WithLabelValues("created").Inc()
			return func() { c.setReplica(out) }, nil
		}
	}
	nodeRV := c.nodes[node].Metadata.ResourceVersion
	return func(ctx context.Context) (func(), error) {
		start := m.clock.Now()
		unbound := *r
		out, err := store.CreateBoundReplica(ctx, m.store, r, node, nodeRV)
		if errors.Is(err, api.ErrConflict) {
			m.metrics.placementFailures.WithLabelValues("conflict").Inc()
			out, err = store.Create(ctx, m.store, &unbound)
		} else if err == nil {
			m.metrics.placed(m.clock.Since(start))
		}
		if err != nil {
			return func() { c.cluster.Forget(key) }, err
		}
		m.metrics.replicas.WithLabelValues("created").Inc()
		return func() {
			if out.Spec.NodeName == "" {
				c.cluster.Forget(key)
			}
			c.setReplica(out)
		}, nil
	}
}

// deleteReplica is the write that deletes replica k.
func (m *Manager) deleteReplica(c *cache, k api.Key) writeOp {
	return func(ctx context.Context) (func(), error) {
		err := store.Delete[api.Replica](ctx, m.store, k, "")
		if err != nil && !benign(err) {
			return nil, err
		}
		if err == nil {
			m.metrics.replicas.WithLabelValues("deleted").Inc()
		}
		return func() { c.forgetReplica(k) }, nil
	}
}

// replicaSets makes each revision's replica count match its Scale,
// replaces the replicas of draining nodes (see planReplicas), and removes
// replicas whose revision is gone.
func (m *Manager) replicaSets(ctx context.Context, c *cache) error {
	draining := func(node string) bool {
		n := c.nodes[node]
		return n != nil && n.Spec.Drain
	}
	var ops []writeOp
	for k, sc := range c.scales {
		rev := c.revisions[k]
		if rev == nil {
			continue
		}
		plan := planReplicas(sc.Spec.Replicas, c.byRevision[k], draining)
		for _, name := range plan.remove {
			ops = append(ops, m.deleteReplica(c, api.Key{Namespace: sc.Metadata.Namespace, Name: name}))
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
			ops = append(ops, m.createReplica(c, r))
		}
	}
	// Replicas of revisions that have no Scale any more.
	for rk, reps := range c.byRevision {
		if c.scales[rk] != nil {
			continue
		}
		for k := range reps {
			ops = append(ops, m.deleteReplica(c, k))
		}
	}
	return m.write(ctx, ops)
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

// schedule binds every unbound replica to a node: the scheduler places
// them one after another in memory (each Assume seen by the next Pick),
// then the bindings are written, BindConcurrency at a time, each in one
// transaction that fails if the replica or the node changed since the
// cache read them. A binding that fails so is forgotten, both are read
// again, and the replica placed anew, up to bindAttempts times; what is
// left waits for the next pass.
func (m *Manager) schedule(ctx context.Context, c *cache) error {
	todo := make([]*api.Replica, 0, len(c.unbound))
	for _, r := range c.unbound {
		todo = append(todo, r)
	}
	// Oldest first, so that a replica that waits is not overtaken forever.
	slices.SortFunc(todo, func(a, b *api.Replica) int {
		if c := a.Metadata.CreationTimestamp.Compare(b.Metadata.CreationTimestamp); c != 0 {
			return c
		}
		return strings.Compare(a.Metadata.Name, b.Metadata.Name)
	})
	var errs []error
	for attempt := 1; attempt <= bindAttempts && len(todo) > 0; attempt++ {
		raced, err := m.bindAll(ctx, c, todo)
		errs = append(errs, err)
		todo = todo[:0]
		for _, b := range raced {
			if fresh, ok := m.reread(ctx, c, b.replica, b.node); ok {
				todo = append(todo, fresh)
			}
		}
	}
	return errors.Join(errs...)
}

// bindAttempts bounds how often one pass tries to bind a replica whose
// binding lost a race.
const bindAttempts = 3

// race is a binding that found its replica or its node changed.
type race struct {
	replica *api.Replica
	node    string
}

// bindAll places and binds replicas; raced are the bindings that found
// the replica or its node changed.
func (m *Manager) bindAll(ctx context.Context, c *cache, replicas []*api.Replica) (raced []race, _ error) {
	type binding struct {
		r       *api.Replica
		node    string
		nodeRV  string
		out     *api.Replica
		err     error
		assumed api.Key
	}
	var errs []error
	start := m.clock.Now()
	binds := make([]binding, 0, len(replicas))
	for _, r := range replicas {
		req, ok := c.cluster.Request(r)
		if !ok {
			continue
		}
		name, err := c.cluster.Pick(req)
		if err != nil {
			m.metrics.placementFailures.WithLabelValues("unschedulable").Inc()
			msg := err.Error()
			if r.Status.Message != msg {
				next := *r
				next.Status.Message = msg
				out, err := store.UpdateReplicaStatus(ctx, m.store, &next)
				if err != nil && !benign(err) {
					errs = append(errs, err)
				}
				if err == nil {
					c.setReplica(out)
				}
			}
			continue
		}
		c.cluster.Assume(api.KeyOf(r), name, req)
		binds = append(binds, binding{r: r, node: name, nodeRV: c.nodes[name].Metadata.ResourceVersion, assumed: api.KeyOf(r)})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.cfg.BindConcurrency)
	for i := range binds {
		b := &binds[i]
		g.Go(func() error {
			b.out, b.err = store.BindReplica(gctx, m.store, b.r, b.node, b.nodeRV)
			if b.err == nil {
				m.metrics.placed(m.clock.Since(start))
			}
			return nil
		})
	}
	_ = g.Wait()
	for i := range binds {
		b := &binds[i]
		switch {
		case b.err == nil:
			c.setReplica(b.out)
		case errors.Is(b.err, api.ErrConflict):
			m.metrics.placementFailures.WithLabelValues("conflict").Inc()
			c.cluster.Forget(b.assumed)
			raced = append(raced, race{b.r, b.node})
		case errors.Is(b.err, api.ErrNotFound):
			c.forgetReplica(b.assumed)
		default:
			m.metrics.placementFailures.WithLabelValues("error").Inc()
			c.cluster.Forget(b.assumed)
			errs = append(errs, b.err)
		}
	}
	return raced, errors.Join(errs...)
}

// reread reads a replica whose binding to node lost a race, and the
// node, into the cache; ok is false when the replica is gone or bound now.
func (m *Manager) reread(ctx context.Context, c *cache, r *api.Replica, node string) (_ *api.Replica, ok bool) {
	n, err := store.Get[api.Node](ctx, m.store, api.Key{Name: node})
	switch {
	case err == nil:
		c.setNode(n)
	case errors.Is(err, api.ErrNotFound):
		delete(c.nodes, node)
		c.cluster.RemoveNode(node)
	}
	fresh, err := store.Get[api.Replica](ctx, m.store, api.KeyOf(r))
	if err != nil {
		if errors.Is(err, api.ErrNotFound) {
			c.forgetReplica(api.KeyOf(r))
		}
		return nil, false
	}
	c.setReplica(fresh)
	return fresh, fresh.Spec.NodeName == ""
}

// statuses writes each Scale's observed replica counts.
func (m *Manager) statuses(ctx context.Context, c *cache) error {
	var ops []writeOp
	for k, sc := range c.scales {
		var all, ready int32
		for _, r := range c.byRevision[k] {
			if active(r) {
				all++
			}
			if r.Status.Phase == api.ReplicaReady {
				ready++
			}
		}
		if sc.Status.Replicas == all && sc.Status.ReadyReplicas == ready {
			continue
		}
		next := *sc
		next.Status.Replicas, next.Status.ReadyReplicas = all, ready
		ops = append(ops, func(ctx context.Context) (func(), error) {
			out, err := store.UpdateScaleStatus(ctx, m.store, &next)
			if err != nil {
				if benign(err) {
					err = nil
				}
				return nil, err
			}
			return func() {
				if newer(c.scales[k], out) {
					c.scales[k] = out
				}
			}, nil
		})
	}
	return m.write(ctx, ops)
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
