package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/scheduler"
	"github.com/surgeplatform/surge/controlplane/store"
)

// B5's simulated cluster, and its goal from the issue.
const (
	placementNodes     = 5000
	placementFunctions = 10000
	placementReplicas  = 50000 // bound before the measurement
	placementImages    = 500   // distinct images among the functions
	placementDecisions = 30000 // timed
	// placementNaive is how many decisions the naive baseline makes: it is
	// about a hundred times slower.
	placementNaive = 300
	placementGoal  = 10000 // decisions per second
	// Bindings through etcd, each way.
	bindOps         = 3000
	bindConcurrency = 32 // as the controllers' default BindConcurrency
)

// Placement is B5: placement decisions per second of the scheduler's core
// over a simulated cluster of 5,000 nodes running 50,000 replicas, next to
// the naive scheduler it replaced (filter, then sort every candidate, per
// replica), and bindings per second through etcd (store.BindReplica,
// one transaction each) next to a bare etcd compare-and-put loop in the
// same etcd, as many in flight.
func Placement(ctx context.Context) ([]Row, error) {
	sim := newPlacementSim(rand.New(rand.NewPCG(5, 5)))
	fast := sim.measure(placementDecisions, func(req scheduler.Request) (string, error) { return sim.cluster.Pick(req) })
	naiveNodes := sim.naiveNodes()
	naive := sim.measure(placementNaive, func(req scheduler.Request) (string, error) { return naivePick(naiveNodes, req) })
	rate := func(s []time.Duration) float64 {
		var total time.Duration
		for _, d := range s {
			total += d
		}
		return float64(len(s)) / total.Seconds()
	}
	verdict := "met"
	if rate(fast) < placementGoal {
		verdict = "MISSED"
	}
	naiveRow := Row{Bench: "B5", Subject: "placement, naive filter+sort (the scheduler before)", Samples: naive,
		Value: rate(naive), Unit: "decisions/s", Baseline: true}
	rows := []Row{
		naiveRow,
		{Bench: "B5", Subject: fmt.Sprintf("placement, %d nodes, %d replicas", placementNodes, placementReplicas),
			Samples: fast, Ref: &naiveRow, Value: rate(fast), Unit: "decisions/s",
			Note: fmt.Sprintf("goal >= %d/s: %s (kube-scheduler 100-300/s, Nomad C1M 3,750/s: published)", placementGoal, verdict)},
	}
	bind, err := bindings(ctx)
	return append(rows, bind...), err
}

// placementSim is the simulated cluster: nodes in three zones with a
// sample of the images, functions with a request, an image and, for one
// in ten, a zone selector, and the replicas already bound.
type placementSim struct {
	rnd       *rand.Rand
	cluster   *scheduler.Cluster
	revisions []api.Revision
	nodes     []api.Node
	replicas  []api.Replica
}

func newPlacementSim(rnd *rand.Rand) *placementSim {
	s := &placementSim{rnd: rnd}
	image := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	zones := []string{"a", "b", "c"}
	for i := range placementNodes {
		n := api.Node{
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("node-%05d", i), Labels: map[string]string{"zone": zones[i%3]}},
			Spec:     api.NodeSpec{PodSubnet: "10.0.0.0/24"},
			Status: api.NodeStatus{State: api.NodeAlive,
				Allocatable: api.NodeResources{CPU: []string{"16", "32", "64"}[i%3], Memory: []string{"64Gi", "128Gi", "256Gi"}[i%3]}},
		}
		for range 16 {
			n.Status.Images = append(n.Status.Images, image(rnd.IntN(placementImages)))
		}
		switch i % 100 {
		case 1:
			n.Spec.Unschedulable = true
		case 2:
			n.Status.State = api.NodeDead
		}
		s.nodes = append(s.nodes, n)
	}
	for f := range placementFunctions {
		r := api.Revision{
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("fn-%05d-00001", f), Namespace: "default"},
			Spec: api.RevisionSpec{Function: fmt.Sprintf("fn-%05d", f), ImageDigest: image(rnd.IntN(placementImages)),
				Template: api.FunctionSpec{Resources: api.Resources{
					CPU: []string{"100m", "250m", "500m", "1"}[rnd.IntN(4)], Memory: []string{"128Mi", "256Mi", "512Mi", "1Gi"}[rnd.IntN(4)]}}},
		}
		if f%10 == 0 {
			r.Spec.Template.NodeSelector = map[string]string{"zone": zones[rnd.IntN(3)]}
		}
		s.revisions = append(s.revisions, r)
	}
	s.cluster = scheduler.NewCluster(s.nodes, nil, s.revisions)
	for i := range placementReplicas {
		rev := &s.revisions[i%placementFunctions]
		r := api.Replica{
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("%s-%06d", rev.Metadata.Name, i), Namespace: "default"},
			Spec:     api.ReplicaSpec{Function: rev.Spec.Function, Revision: rev.Metadata.Name, NodeName: s.nodes[rnd.IntN(placementNodes)].Metadata.Name},
		}
		s.replicas = append(s.replicas, r)
		s.cluster.SetReplica(&r)
	}
	return s
}

// measure makes n placements of new replicas of random functions with
// pick, each Assumed, and returns how long each took (the pick only).
func (s *placementSim) measure(n int, pick func(scheduler.Request) (string, error)) []time.Duration {
	// The requests and the new replicas' names are made first, so that
	// the loop makes no garbage of its own.
	reqs := make([]scheduler.Request, n)
	keys := make([]api.Key, n)
	for i := range n {
		rev := &s.revisions[s.rnd.IntN(len(s.revisions))]
		reqs[i] = scheduler.RequestOf(rev)
		keys[i] = api.Key{Namespace: "default", Name: fmt.Sprintf("%s-new%06d", rev.Metadata.Name, s.rnd.Int())}
	}
	runtime.GC()
	samples := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		node, err := pick(reqs[i])
		samples[i] = time.Since(start)
		if err == nil {
			s.cluster.Assume(keys[i], node, reqs[i])
		}
	}
	return samples
}

// naiveNode is a node as the scheduler before this one saw it.
type naiveNode struct {
	scheduler.Node
	images map[string]bool
}

// naiveNodes snapshots the cluster for the naive baseline.
func (s *placementSim) naiveNodes() []naiveNode {
	var out []naiveNode
	for _, n := range s.cluster.Nodes() {
		nn := naiveNode{Node: n, images: map[string]bool{}}
		for _, d := range n.Images {
			nn.images[d] = true
		}
		out = append(out, nn)
	}
	return out
}

// naivePick is the same decision made the straightforward way, as the
// scheduler did before: every node is filtered and scored with map
// lookups, and the candidates are sorted.
func naivePick(nodes []naiveNode, req scheduler.Request) (string, error) {
	type cand struct {
		name   string
		spread int
		score  float64
	}
	var cands []cand
	for i := range nodes {
		n := &nodes[i]
		if !n.Schedulable || n.MilliCPU-n.UsedMilliCPU < req.MilliCPU || n.MemoryBytes-n.UsedMemory < req.MemoryBytes {
			continue
		}
		ok := true
		for k, v := range req.Selector {
			if n.Labels[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		score := 50*float64(n.MilliCPU-n.UsedMilliCPU-req.MilliCPU)/float64(n.MilliCPU) +
			50*float64(n.MemoryBytes-n.UsedMemory-req.MemoryBytes)/float64(n.MemoryBytes)
		if n.images[req.Image] {
			score += scheduler.ImageScore
		}
		cands = append(cands, cand{n.Name, n.FunctionCount[req.Function], score})
	}
	if len(cands) == 0 {
		return "", scheduler.ErrNoNode
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.spread != b.spread {
			return a.spread < b.spread
		}
		if a.score != b.score {
			return a.score > b.score
		}
		return a.name < b.name
	})
	return cands[0].name, nil
}

// bindings measures bindOps bindings through etcd with store.BindReplica,
// and as many bare compare-and-put transactions, bindConcurrency in flight
// each, in one embedded etcd with its default durability (an fsync per
// batch of commits).
func bindings(ctx context.Context) (_ []Row, retErr error) {
	dir, err := os.MkdirTemp("", "surge-bench-bind-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	etcd, cli, err := startBenchEtcd(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer func() { cli.Close(); etcd.Close() }()
	st := store.New(cli, nil)

	// The replicas to bind, and a node to bind them to.
	node, err := st.CreateNode(ctx, &api.Node{Metadata: api.ObjectMeta{Name: "node-1"},
		Status: api.NodeStatus{State: api.NodeAlive, Allocatable: api.NodeResources{CPU: "64", Memory: "256Gi"}}},
		netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		return nil, fmt.Errorf("create a node: %w", err)
	}
	reps := make([]*api.Replica, bindOps)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(bindConcurrency)
	for i := range reps {
		g.Go(func() error {
			r, err := store.Create(gctx, st, &api.Replica{
				Metadata: api.ObjectMeta{Name: fmt.Sprintf("fn-%05d-00001-r%04d", i%100, i), Namespace: "default",
					Labels: map[string]string{api.LabelFunction: fmt.Sprintf("fn-%05d", i%100)}},
				Spec:   api.ReplicaSpec{Function: fmt.Sprintf("fn-%05d", i%100), Revision: fmt.Sprintf("fn-%05d-00001", i%100)},
				Status: api.ReplicaStatus{Phase: api.ReplicaPending},
			})
			reps[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("create replicas: %w", err)
	}
	// The bare loop's keys, one value of a bound replica's size each.
	val := strings.Repeat("x", 420)
	keys := make([]string, bindOps)
	revs := make([]int64, bindOps)
	for i := range keys {
		keys[i] = fmt.Sprintf("/bench/bind/%05d", i)
		resp, err := cli.Put(ctx, keys[i], val)
		if err != nil {
			return nil, err
		}
		revs[i] = resp.Header.Revision
	}

	bare, bareRate, err := inFlight(ctx, bindOps, func(ctx context.Context, i int) error {
		tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(keys[i]), "=", revs[i])).
			Then(clientv3.OpPut(keys[i], val)).Commit()
		if err == nil && !tr.Succeeded {
			err = errors.New("bare transaction lost a race it cannot have")
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bare transactions: %w", err)
	}
	bound, boundRate, err := inFlight(ctx, bindOps, func(ctx context.Context, i int) error {
		_, err := store.BindReplica(ctx, st, reps[i], node.Metadata.Name, node.Metadata.ResourceVersion)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bindings: %w", err)
	}
	return []Row{
		{Bench: "B5", Subject: fmt.Sprintf("etcd compare-and-put, %d in flight", bindConcurrency), Samples: bare,
			Value: bareRate, Unit: "bindings/s", Baseline: true},
		{Bench: "B5", Subject: fmt.Sprintf("bindings (store.BindReplica), %d in flight", bindConcurrency), Samples: bound,
			Value: boundRate, Unit: "bindings/s", Note: "one transaction each: replica and node unchanged, then put"},
	}, nil
}

// inFlight runs op(i) for i in [0,n), bindConcurrency at a time, and
// returns each one's latency and the operations per second.
func inFlight(ctx context.Context, n int, op func(ctx context.Context, i int) error) ([]time.Duration, float64, error) {
	samples := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range bindConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := op(ctx, i)
				samples[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("operation %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first == nil {
		first = ctx.Err()
	}
	return samples, float64(n) / elapsed.Seconds(), first
}

// startBenchEtcd runs a single-member etcd under dir, as the server embeds
// one (plain HTTP on loopback: the benchmark measures etcd, not TLS), and
// returns an in-process client of it.
func startBenchEtcd(ctx context.Context, dir string) (*embed.Etcd, *clientv3.Client, error) {
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	var addrs [2]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, nil, err
		}
		addrs[i] = a
	}
	client, peer := url.URL{Scheme: "http", Host: addrs[0]}, url.URL{Scheme: "http", Host: addrs[1]}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start etcd: %w", err)
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("etcd: %w", err)
	case <-t.C:
		e.Close()
		return nil, nil, fmt.Errorf("etcd not ready after a minute: see %s", cfg.LogOutputs[0])
	case <-ctx.Done():
		e.Close()
		return nil, nil, ctx.Err()
	}
	return e, v3client.New(e.Server), nil
}
