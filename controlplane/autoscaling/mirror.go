package autoscaling

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// mirror is the runner's copy of the functions, revisions, scales and
// traffic, kept by one watch of the store's prefix, so that a tick reads
// memory instead of listing etcd: with 10,000 functions the four lists
// every second cost the server a fifth of a core in JSON alone (benchmark
// B9). A watch response is applied whole, under the lock, and the watch
// delivers changes in etcd's order, so a tick reads the four kinds as of
// one revision: a rollout's function and traffic change together, as
// autoscaler.Input requires. The copy may be a few milliseconds behind
// etcd; the runner's writes are compare-and-swaps, which a stale read
// makes fail harmlessly until the next tick.
type mirror struct {
	mu        sync.Mutex
	ready     bool // the first read is in
	functions map[api.Key]*api.Function
	revisions map[api.Key]*api.Revision
	scales    map[api.Key]*api.Scale
	traffic   map[api.Key]*api.Traffic
}

// mirrorRetry is how long the mirror waits before reading again after its
// watch broke.
const mirrorRetry = time.Second

// run keeps the mirror current until ctx ends, reading everything again
// whenever its watch breaks.
func (m *mirror) run(ctx context.Context, st *store.Store, clk clock.Clock, onError func(error)) {
	for {
		err := m.follow(ctx, st)
		if ctx.Err() != nil {
			return
		}
		onError(err)
		if !clock.Sleep(ctx, clk, mirrorRetry) {
			return
		}
	}
}

// mirrorKinds are the kinds the mirror keeps, by key prefix.
var mirrorKinds = []api.Kind{api.FunctionKind, api.RevisionKind, api.ScaleKind, api.TrafficKind}

// follow reads the four kinds at one revision, then applies the watch
// from there until it ends.
func (m *mirror) follow(ctx context.Context, st *store.Store) error {
	cli := st.Client()
	fresh := &mirror{functions: map[api.Key]*api.Function{}, revisions: map[api.Key]*api.Revision{},
		scales: map[api.Key]*api.Scale{}, traffic: map[api.Key]*api.Traffic{}}
	var rev int64
	for _, k := range mirrorKinds {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, store.KindPrefix(k), opts...)
		if err != nil {
			return fmt.Errorf("read %s: %w", k.Plural, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fresh.put(string(kv.Key), kv.Value, kv.ModRevision); err != nil {
				return err
			}
		}
	}
	m.mu.Lock()
	m.functions, m.revisions, m.scales, m.traffic = fresh.functions, fresh.revisions, fresh.scales, fresh.traffic
	m.ready = true
	m.mu.Unlock()
	// A gRPC stream of its own (the metadata tells the client so): a
	// watch that shares a stream waits on the other's traffic, and its
	// cancellation with it.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "surge-watch", "autoscaler"))
	defer cancel()
	wch := cli.Watch(wctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		// ctx first: a watch's channel closes only once the cancellation
		// reached etcd, which a busy stream delays.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch: closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			if err := m.apply(wr.Events); err != nil {
				return err
			}
		}
	}
}

// apply applies one watch response's events at once.
func (m *mirror) apply(events []*clientv3.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range events {
		key := string(ev.Kv.Key)
		if ev.Type == mvccpb.DELETE {
			m.remove(key)
			continue
		}
		if err := m.put(key, ev.Kv.Value, ev.Kv.ModRevision); err != nil {
			return err
		}
	}
	return nil
}

// put records one object of the four kinds; other keys are ignored. The
// caller holds mu (or owns m).
func (m *mirror) put(key string, value []byte, modRev int64) error {
	var err error
	switch {
	case strings.HasPrefix(key, store.KindPrefix(api.ScaleKind)):
		var s *api.Scale
		if s, err = store.Decode[api.Scale](value, modRev); err == nil {
			m.scales[api.KeyOf(s)] = s
		}
	case strings.HasPrefix(key, store.KindPrefix(api.FunctionKind)):
		var f *api.Function
		if f, err = store.Decode[api.Function](value, modRev); err == nil {
			m.functions[api.KeyOf(f)] = f
		}
	case strings.HasPrefix(key, store.KindPrefix(api.RevisionKind)):
		var r *api.Revision
		if r, err = store.Decode[api.Revision](value, modRev); err == nil {
			m.revisions[api.KeyOf(r)] = r
		}
	case strings.HasPrefix(key, store.KindPrefix(api.TrafficKind)):
		var t *api.Traffic
		if t, err = store.Decode[api.Traffic](value, modRev); err == nil {
			m.traffic[api.KeyOf(t)] = t
		}
	}
	return err
}

// remove forgets the object at key. The caller holds mu.
func (m *mirror) remove(key string) {
	for _, k := range mirrorKinds {
		obj, found := store.KeyOfEtcdKey(k, key)
		if !found {
			continue
		}
		switch k {
		case api.FunctionKind:
			delete(m.functions, obj)
		case api.RevisionKind:
			delete(m.revisions, obj)
		case api.ScaleKind:
			delete(m.scales, obj)
		case api.TrafficKind:
			delete(m.traffic, obj)
		}
		return
	}
}

// input copies the mirror into a tick's input; ok is false before the
// first read is in.
func (m *mirror) input() (in autoscaler.Input, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return in, false
	}
	in.Scales = make([]api.Scale, 0, len(m.scales))
	for _, s := range m.scales {
		in.Scales = append(in.Scales, *s)
	}
	in.Revisions = make([]api.Revision, 0, len(m.revisions))
	for _, r := range m.revisions {
		in.Revisions = append(in.Revisions, *r)
	}
	in.Functions = make([]api.Function, 0, len(m.functions))
	for _, f := range m.functions {
		in.Functions = append(in.Functions, *f)
	}
	in.Traffic = make([]api.Traffic, 0, len(m.traffic))
	for _, t := range m.traffic {
		in.Traffic = append(in.Traffic, *t)
	}
	return in, true
}
