package gateway

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/api"
)

// revision is one routed revision. Like Endpoint it outlives snapshots: its
// queue, stats, retry budget and metrics carry over.
type revision struct {
	key      api.Key
	function string
	limit    int64
	// timeout is the total limit; responseStart and idle are 0 for the
	// gateway's defaults.
	timeout, responseStart, idle time.Duration

	// eps is the ready endpoints, replaced whole on every rebuild that
	// changes them (copy-on-write); requests read it without a lock.
	eps  atomic.Pointer[[]*Endpoint]
	gone atomic.Bool

	queue    waitQueue
	stats    revStats
	outcomes revOutcomes
	budget   retryBudget
	// lastActivation (unix nanoseconds) and lastDemand are the last call
	// to the Activator: see Gateway.activate.
	lastActivation atomic.Int64
	lastDemand     atomic.Int64
	followUp       atomic.Bool // queued in Gateway.followUps
	// coldStart is set while a request that found the revision without a
	// replica waits for one or is answered: the first of a cold start,
	// which surge_cold_start_seconds times.
	coldStart atomic.Bool
	m         *revMetrics // nil without metrics
}

func (r *revision) endpoints() []*Endpoint {
	if p := r.eps.Load(); p != nil {
		return *p
	}
	return nil
}

// functionRoute is a function in a routing snapshot.
type functionRoute struct {
	key     api.Key
	targets []target
	// byName holds the revisions the Surge-Revision header may name: those
	// that take a share of the traffic or carry a tag (or, with no
	// Traffic, the one that takes it all). An anonymous client must not
	// call, nor wake, any revision ever deployed.
	byName map[string]*revision
	// httpsRedirect sends the function's plain HTTP requests to HTTPS.
	httpsRedirect bool
}

// tagRoute is a tagged revision's own route, while a snapshot is built.
type tagRoute struct {
	fk  api.Key
	tag string
	fr  *functionRoute
}

// Table is one immutable routing snapshot. Requests load the current one
// with a single atomic read and never lock.
type Table struct {
	// routes is keyed "name.namespace", and also "name" for functions in
	// the default namespace: exactly the host prefix before the domain.
	routes map[string]*functionRoute
	// revisions lists every live revision, for stats.
	revisions []*revision
}

func (t *Table) lookup(key []byte) *functionRoute {
	return t.routes[string(key)] // no allocation: the compiler keys the map with the bytes
}

// routeHooks connect the routing store to the I/O shell. All may be nil.
type routeHooks struct {
	hostClient      func(addr string, limit int64) *fasthttp.HostClient
	revisionAdded   func(r *revision)
	revisionRemoved func(r *revision)
}

type endpointKey struct {
	ns, replica, addr string
}

// room is how many more requests eps can take now: the free slots under
// their concurrency limits, or -1 (every one) when one has no limit. A
// burst waiting for a revision's first replicas is woken as far as they
// have room, not all at once to find them full and queue again.
func room(eps []*Endpoint) int {
	n := 0
	for _, e := range eps {
		if e.limit == 0 {
			return -1
		}
		n += int(max(e.limit-e.inflight.Load(), 0))
	}
	return n
}

// Routes holds the routing state that sources edit and the snapshot that
// requests read. Update is serialized by a mutex; Load is one atomic read.
type Routes struct {
	cfg   routeConfig
	hooks routeHooks

	mu    sync.Mutex
	state State
	revs  map[api.Key]*revision
	eps   map[endpointKey]*Endpoint

	table atomic.Pointer[Table]
}

type routeConfig struct {
	defaultTimeout time.Duration
	queueDepth     int
	// maxPerEndpoint caps every endpoint's requests in flight, as its
	// connection pool caps its connections (MaxConnsPerEndpoint): more
	// wait in the queue rather than fail for want of a connection. 0: no
	// cap but the revision's limit.
	maxPerEndpoint int64
	// room bounds the waiting requests of all revisions together; nil
	// means no bound but each revision's.
	room   *queueRoom
	budget budgetConfig
}

var _ Updater = (*Routes)(nil)

func newRoutes(cfg routeConfig, hooks routeHooks) *Routes {
	r := &Routes{
		cfg:   cfg,
		hooks: hooks,
		state: newState(),
		revs:  map[api.Key]*revision{},
		eps:   map[endpointKey]*Endpoint{},
	}
	r.table.Store(&Table{routes: map[string]*functionRoute{}})
	return r
}

// Load returns the current snapshot.
func (r *Routes) Load() *Table { return r.table.Load() }

// Update implements Updater.
func (r *Routes) Update(fn func(*State)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.state)
	r.rebuild()
}

// rebuild derives a new snapshot from the state. Called with mu held.
func (r *Routes) rebuild() {
	s := &r.state

	// Revisions: keep the persistent objects, make new ones, retire gone ones.
	live := make(map[api.Key]*revision, len(s.revisions))
	for k, ri := range s.revisions {
		rev := r.revs[k]
		if rev == nil {
			// Revisions are immutable: what routing needs of one is read
			// once, here, and never written while requests read it.
			rev = &revision{key: k, function: ri.Function}
			rev.limit = int64(max(ri.Concurrency, 0))
			rev.timeout = ri.Timeout
			if rev.timeout <= 0 {
				rev.timeout = r.cfg.defaultTimeout
			}
			rev.responseStart, rev.idle = ri.ResponseStartTimeout, ri.IdleTimeout
			rev.queue.max = r.cfg.queueDepth
			if ri.QueueDepth > 0 {
				rev.queue.max = ri.QueueDepth
			}
			rev.queue.room = r.cfg.room
			rev.budget.init(r.cfg.budget)
			if r.hooks.revisionAdded != nil {
				r.hooks.revisionAdded(rev)
			}
		}
		live[k] = rev
	}
	for k, rev := range r.revs {
		if live[k] == nil {
			rev.gone.Store(true)
			empty := []*Endpoint(nil)
			rev.eps.Store(&empty)
			rev.queue.wakeAll()
			if r.hooks.revisionRemoved != nil {
				r.hooks.revisionRemoved(rev)
			}
		}
	}
	r.revs = live

	// Endpoints: ready ones are routed; terminating ones stay known (for
	// retry decisions of their in-flight requests) but get nothing new.
	ready := map[*revision][]*Endpoint{}
	seen := make(map[endpointKey]bool, len(s.endpoints))
	for _, ei := range s.endpoints {
		if ei.FromGossip {
			var ok bool
			if ei, ok = s.gossipAgrees(ei); !ok {
				continue // not (yet) what the control plane assigned
			}
		}
		rev := live[api.Key{Namespace: ei.Namespace, Name: ei.Revision}]
		if rev == nil || ei.Addr == "" {
			continue // gossip may know a replica before the watch knows its revision
		}
		if ei.Phase != api.ReplicaReady && ei.Phase != api.ReplicaTerminating {
			continue
		}
		k := endpointKey{ei.Namespace, ei.Replica, ei.Addr}
		ep := r.eps[k]
		if ep == nil || ep.rev != rev {
			limit := rev.limit
			if m := r.cfg.maxPerEndpoint; m > 0 && (limit == 0 || limit > m) {
				limit = m
			}
			ep = &Endpoint{addr: ei.Addr, name: ei.Replica, limit: limit, rev: rev}
			if r.hooks.hostClient != nil {
				ep.hc = r.hooks.hostClient(ei.Addr, rev.limit)
			}
			r.eps[k] = ep
		}
		seen[k] = true
		if ei.Phase == api.ReplicaReady {
			ep.draining.Store(false)
			if s.reported[api.Key{Namespace: ei.Namespace, Name: ei.Replica}] {
				ep.reportedReady()
			}
			ready[rev] = append(ready[rev], ep)
		} else {
			ep.draining.Store(true)
		}
	}
	for k, ep := range r.eps {
		if !seen[k] {
			ep.draining.Store(true)
			if ep.hc != nil {
				ep.hc.CloseIdleConnections()
			}
			delete(r.eps, k)
		}
	}
	clear(s.reported)
	for _, rev := range live {
		eps := ready[rev]
		slices.SortFunc(eps, func(a, b *Endpoint) int { return strings.Compare(a.addr, b.addr) })
		if !slices.Equal(eps, rev.endpoints()) {
			rev.eps.Store(&eps)
			if rev.queue.waiting() {
				rev.queue.wake(room(eps))
			}
		}
	}

	// Functions.
	byFunction := map[api.Key][]*revision{}
	for k, ri := range s.revisions {
		fk := api.Key{Namespace: ri.Namespace, Name: ri.Function}
		byFunction[fk] = append(byFunction[fk], live[k])
	}
	numbers := func(rev *revision) int64 { return s.revisions[rev.key].Number }
	t := &Table{routes: make(map[string]*functionRoute, 2*len(s.functions))}
	var tagged []tagRoute
	for fk, fi := range s.functions {
		fr := &functionRoute{key: fk, byName: map[string]*revision{}, httpsRedirect: fi.HTTPSRedirect}
		revs := byFunction[fk]
		all := make(map[string]*revision, len(revs))
		for _, rev := range revs {
			all[rev.key.Name] = rev
		}
		if tt, ok := s.traffic[fk]; ok {
			var cum uint32
			for _, tg := range tt {
				rev := all[tg.Revision]
				if rev == nil {
					continue
				}
				if tg.Tag != "" || tg.Percent > 0 {
					fr.byName[rev.key.Name] = rev
				}
				if tg.Tag != "" {
					tagged = append(tagged, tagRoute{fk: fk, tag: tg.Tag, fr: &functionRoute{key: fk,
						targets: []target{{rev: rev, cum: 100}}, byName: fr.byName}})
				}
				if tg.Percent <= 0 {
					continue
				}
				cum += uint32(tg.Percent)
				fr.targets = append(fr.targets, target{rev: rev, cum: cum})
			}
		} else {
			latest := all[fi.DefaultRevision]
			if latest == nil && len(revs) > 0 {
				latest = slices.MaxFunc(revs, func(a, b *revision) int { return cmp.Compare(numbers(a), numbers(b)) })
			}
			if latest != nil {
				fr.targets = []target{{rev: latest, cum: 100}}
				fr.byName[latest.key.Name] = latest
			}
		}
		t.routes[fk.Name+"."+fk.Namespace] = fr
		if fk.Namespace == api.DefaultNamespace {
			t.routes[fk.Name] = fr
		}
	}
	// A tagged revision answers at TAG-NAME.DOMAIN, whatever its share,
	// as Knative's tag routes do; a function of that name keeps its own,
	// and of two tags that make one host the first in key order wins.
	slices.SortFunc(tagged, func(a, b tagRoute) int {
		return cmp.Or(strings.Compare(a.fk.Namespace, b.fk.Namespace), strings.Compare(a.fk.Name, b.fk.Name), strings.Compare(a.tag, b.tag))
	})
	for _, tr := range tagged {
		host := api.TagHost(tr.tag, tr.fk.Name)
		if _, taken := t.routes[host+"."+tr.fk.Namespace]; !taken {
			t.routes[host+"."+tr.fk.Namespace] = tr.fr
		}
		if _, taken := t.routes[host]; !taken && tr.fk.Namespace == api.DefaultNamespace {
			t.routes[host] = tr.fr
		}
	}
	t.revisions = make([]*revision, 0, len(live))
	for _, rev := range live {
		t.revisions = append(t.revisions, rev)
	}
	slices.SortFunc(t.revisions, func(a, b *revision) int {
		return cmp.Or(strings.Compare(a.key.Namespace, b.key.Namespace), strings.Compare(a.key.Name, b.key.Name))
	})
	r.table.Store(t)
}
