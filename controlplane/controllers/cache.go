package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/scheduler"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// cache is the controllers' copy of what they reconcile — functions,
// revisions, scales, replicas, nodes and the nodes' leases, and the
// functions' traffic and rollouts (which revisions are kept) — and the
// scheduler's accounting of it, kept current by one watch of the store's
// prefix, as Kubernetes' informers keep theirs. A pass reads it instead of
// listing etcd, so that a pass costs a walk over memory however many
// objects there are, and a placement reads nothing at all.
//
// A pass first syncs the cache to etcd's current revision, so that it
// sees its own earlier writes and everyone else's (a level-triggered pass
// on a stale view would act twice); its own writes are also applied at
// once (write-through), so that later steps of the same pass see them.
//
// The objects it holds are shared: a pass copies one before changing it.
// Only the loop's goroutine uses a cache.
type cache struct {
	functions map[api.Key]*api.Function
	scales    map[api.Key]*api.Scale
	revisions map[api.Key]*api.Revision
	replicas  map[api.Key]*api.Replica
	nodes     map[string]*api.Node
	leases    map[string]time.Time
	traffic   map[api.Key]*api.Traffic
	rollouts  map[api.Key]*api.Rollout
	// byRevision indexes the replicas by revision; unbound holds those
	// with no node yet.
	byRevision map[api.Key]map[api.Key]*api.Replica
	unbound    map[api.Key]*api.Replica
	cluster    *scheduler.Cluster

	// rev is the etcd revision the cache reflects: every change up to it
	// has been applied.
	rev int64
	// wch is the watch that feeds the cache; nil for a cache read once
	// (Pass, in tests).
	wch     clientv3.WatchChan
	etcd    *clientv3.Client
	watchMD context.Context // the watch's metadata, for RequestProgress
	clock   clock.Clock
}

func newEmptyCache() *cache {
	return &cache{
		functions: map[api.Key]*api.Function{}, scales: map[api.Key]*api.Scale{},
		revisions: map[api.Key]*api.Revision{}, replicas: map[api.Key]*api.Replica{},
		nodes: map[string]*api.Node{}, leases: map[string]time.Time{},
		traffic: map[api.Key]*api.Traffic{}, rollouts: map[api.Key]*api.Rollout{},
		byRevision: map[api.Key]map[api.Key]*api.Replica{}, unbound: map[api.Key]*api.Replica{},
		cluster: scheduler.NewCluster(nil, nil, nil),
	}
}

// readCache lists every kind the controllers reconcile at one etcd
// revision. With watch, it then follows the store's prefix from that
// revision on, until ctx ends.
func readCache(ctx context.Context, st *store.Store, clk clock.Clock, watch bool) (*cache, error) {
	c := newEmptyCache()
	c.etcd, c.clock = st.Client(), clock.Or(clk)
	// Revisions before replicas, so that each replica's request is known
	// when it is accounted for.
	prefixes := []string{
		store.KindPrefix(api.RevisionKind), store.KindPrefix(api.FunctionKind), store.KindPrefix(api.ScaleKind),
		store.KindPrefix(api.NodeKind), store.LeasePrefix, store.KindPrefix(api.ReplicaKind),
		store.KindPrefix(api.TrafficKind), store.KindPrefix(api.RolloutKind),
	}
	for _, p := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if c.rev != 0 {
			opts = append(opts, clientv3.WithRev(c.rev))
		}
		resp, err := c.etcd.Get(ctx, p, opts...)
		if err != nil {
			return nil, fmt.Errorf("controllers: read %s: %w", p, err)
		}
		if c.rev == 0 {
			c.rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := c.put(string(kv.Key), kv.Value, kv.ModRevision); err != nil {
				return nil, err
			}
		}
	}
	if watch {
		// A gRPC stream of its own (the metadata tells the client so),
		// for its progress requests and its cancellation, which a stream
		// shared with other watches would hold up.
		c.watchMD = metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "surge-watch", "controllers")
		c.wch = c.etcd.Watch(c.watchMD, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(c.rev+1))
	}
	return c, nil
}

// errWatchClosed ends a term whose watch etcd closed (it lost its
// leader, or compacted past it): the next term reads anew.
var errWatchClosed = errors.New("controllers: watch closed")

// apply applies one watch response; an error means the watch ended.
func (c *cache) apply(wr clientv3.WatchResponse) error {
	if wr.Canceled || wr.CompactRevision != 0 {
		return fmt.Errorf("%w: %v", errWatchClosed, wr.Err())
	}
	if err := wr.Err(); err != nil {
		return fmt.Errorf("%w: %v", errWatchClosed, err)
	}
	for _, ev := range wr.Events {
		key := string(ev.Kv.Key)
		if ev.Type == mvccpb.DELETE {
			c.remove(key, ev.Kv.ModRevision)
		} else if err := c.put(key, ev.Kv.Value, ev.Kv.ModRevision); err != nil {
			return err
		}
		c.rev = max(c.rev, ev.Kv.ModRevision)
	}
	if wr.IsProgressNotify() {
		c.rev = max(c.rev, wr.Header.Revision)
	}
	return nil
}

// sync applies the watch's events until the cache reflects etcd's
// current revision. A write outside the watched prefix can make that
// revision one no event carries: etcd is then asked for a progress
// notification, and asked again every progressEvery while none comes.
func (c *cache) sync(ctx context.Context) error {
	resp, err := c.etcd.Get(ctx, store.Prefix, clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return fmt.Errorf("controllers: read the current revision: %w", err)
	}
	target := resp.Header.Revision
	var ask clock.Timer
	defer func() {
		if ask != nil {
			ask.Stop()
		}
	}()
	asked := false
	for c.rev < target {
		select {
		case wr, ok := <-c.wch:
			if !ok {
				return errWatchClosed
			}
			if err := c.apply(wr); err != nil {
				return err
			}
			continue
		default:
		}
		if !asked {
			if err := c.etcd.RequestProgress(c.watchMD); err != nil {
				return fmt.Errorf("controllers: ask for the watch's progress: %w", err)
			}
			asked = true
			if ask == nil {
				ask = c.clock.NewTimer(progressEvery)
			} else {
				ask.Reset(progressEvery)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ask.Chan():
			asked = false
		case wr, ok := <-c.wch:
			if !ok {
				return errWatchClosed
			}
			if err := c.apply(wr); err != nil {
				return err
			}
		}
	}
	return nil
}

// progressEvery is how long sync waits for a progress notification before
// asking again (etcd sends none to a watcher that is still catching up).
const progressEvery = 100 * time.Millisecond

// put records one stored object, unless the cache has a newer version of
// it (a write of this pass, applied through, that the watch reports
// after an older change).
func (c *cache) put(key string, value []byte, modRev int64) error {
	switch {
	case strings.HasPrefix(key, store.LeasePrefix):
		if node, t, ok := store.ParseNodeLease(key, value); ok {
			c.leases[node] = t
		}
	case strings.HasPrefix(key, store.KindPrefix(api.ReplicaKind)):
		r, err := store.Decode[api.Replica](value, modRev)
		if err != nil {
			return err
		}
		c.setReplica(r)
	case strings.HasPrefix(key, store.KindPrefix(api.NodeKind)):
		n, err := store.Decode[api.Node](value, modRev)
		if err != nil {
			return err
		}
		c.setNode(n)
	case strings.HasPrefix(key, store.KindPrefix(api.ScaleKind)):
		s, err := store.Decode[api.Scale](value, modRev)
		if err != nil {
			return err
		}
		if newer(c.scales[api.KeyOf(s)], s) {
			c.scales[api.KeyOf(s)] = s
		}
	case strings.HasPrefix(key, store.KindPrefix(api.FunctionKind)):
		f, err := store.Decode[api.Function](value, modRev)
		if err != nil {
			return err
		}
		if newer(c.functions[api.KeyOf(f)], f) {
			c.functions[api.KeyOf(f)] = f
		}
	case strings.HasPrefix(key, store.KindPrefix(api.RevisionKind)):
		r, err := store.Decode[api.Revision](value, modRev)
		if err != nil {
			return err
		}
		c.revisions[api.KeyOf(r)] = r
		c.cluster.SetRevision(r)
	case strings.HasPrefix(key, store.KindPrefix(api.TrafficKind)):
		t, err := store.Decode[api.Traffic](value, modRev)
		if err != nil {
			return err
		}
		if newer(c.traffic[api.KeyOf(t)], t) {
			c.traffic[api.KeyOf(t)] = t
		}
	case strings.HasPrefix(key, store.KindPrefix(api.RolloutKind)):
		r, err := store.Decode[api.Rollout](value, modRev)
		if err != nil {
			return err
		}
		if newer(c.rollouts[api.KeyOf(r)], r) {
			c.rollouts[api.KeyOf(r)] = r
		}
	}
	return nil
}

// remove forgets the object at key, deleted at modRev.
func (c *cache) remove(key string, modRev int64) {
	switch {
	case strings.HasPrefix(key, store.LeasePrefix):
		delete(c.leases, strings.TrimPrefix(key, store.LeasePrefix))
	case strings.HasPrefix(key, store.KindPrefix(api.ReplicaKind)):
		if k, ok := store.KeyOfEtcdKey(api.ReplicaKind, key); ok && !laterThan(c.replicas[k], modRev) {
			c.forgetReplica(k)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.NodeKind)):
		if k, ok := store.KeyOfEtcdKey(api.NodeKind, key); ok && !laterThan(c.nodes[k.Name], modRev) {
			delete(c.nodes, k.Name)
			c.cluster.RemoveNode(k.Name)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.ScaleKind)):
		if k, ok := store.KeyOfEtcdKey(api.ScaleKind, key); ok {
			delete(c.scales, k)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.FunctionKind)):
		if k, ok := store.KeyOfEtcdKey(api.FunctionKind, key); ok {
			delete(c.functions, k)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.RevisionKind)):
		if k, ok := store.KeyOfEtcdKey(api.RevisionKind, key); ok {
			delete(c.revisions, k)
			c.cluster.RemoveRevision(k)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.TrafficKind)):
		if k, ok := store.KeyOfEtcdKey(api.TrafficKind, key); ok {
			delete(c.traffic, k)
		}
	case strings.HasPrefix(key, store.KindPrefix(api.RolloutKind)):
		if k, ok := store.KeyOfEtcdKey(api.RolloutKind, key); ok {
			delete(c.rollouts, k)
		}
	}
}

// newer reports whether next is at least as recent as cur (or cur is
// nil).
func newer[T any, P api.ObjectPtr[T]](cur, next P) bool {
	if cur == nil {
		return true
	}
	a, _ := strconv.ParseInt(cur.GetMetadata().ResourceVersion, 10, 64)
	b, _ := strconv.ParseInt(next.GetMetadata().ResourceVersion, 10, 64)
	return b >= a
}

// laterThan reports whether cur was written after modRev: a delete
// reported then is of an older object of the same name.
func laterThan[T any, P api.ObjectPtr[T]](cur P, modRev int64) bool {
	if cur == nil {
		return false
	}
	v, _ := strconv.ParseInt(cur.GetMetadata().ResourceVersion, 10, 64)
	return v > modRev
}

// setReplica records a replica, its indexes and its accounting.
func (c *cache) setReplica(r *api.Replica) {
	k := api.KeyOf(r)
	if !newer(c.replicas[k], r) {
		return
	}
	c.removeReplica(k)
	c.replicas[k] = r
	rk := revisionOf(r)
	set := c.byRevision[rk]
	if set == nil {
		set = map[api.Key]*api.Replica{}
		c.byRevision[rk] = set
	}
	set[k] = r
	if r.Spec.NodeName == "" {
		c.unbound[k] = r
	}
	c.cluster.SetReplica(r)
}

func (c *cache) removeReplica(k api.Key) {
	r := c.replicas[k]
	if r == nil {
		return
	}
	delete(c.replicas, k)
	delete(c.unbound, k)
	rk := revisionOf(r)
	if set := c.byRevision[rk]; set != nil {
		delete(set, k)
		if len(set) == 0 {
			delete(c.byRevision, rk)
		}
	}
	// The cluster keeps a moved replica's accounting when it is set
	// again: only a replica that is gone is removed from it.
}

// forgetReplica removes a replica that was deleted, with its accounting.
func (c *cache) forgetReplica(k api.Key) {
	c.removeReplica(k)
	c.cluster.RemoveReplica(k)
}

// setNode records a node and tells the scheduler.
func (c *cache) setNode(n *api.Node) {
	if !newer(c.nodes[n.Metadata.Name], n) {
		return
	}
	c.nodes[n.Metadata.Name] = n
	c.cluster.SetNode(n)
}

// lastSeen is a node's last heartbeat: its lease, else what its status
// says.
func (c *cache) lastSeen(n *api.Node) time.Time {
	if t, ok := c.leases[n.Metadata.Name]; ok {
		return t
	}
	return n.Status.LastSeen
}
