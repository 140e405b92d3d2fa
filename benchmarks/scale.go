package benchmarks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// B9's cluster and goals, from the issue.
const (
	scaleFunctions = 10000
	scaleNodes     = 1000
	scaleGateways  = 20
	// scaleRedeploys is how many functions get a second revision, timed
	// until every gateway routes it.
	scaleRedeploys  = 200
	scaleRouteGoal  = time.Second // p99
	scaleDeployGoal = 50 * time.Millisecond
	// scaleDeployers and scaleRedeployers are how many deploys are in
	// flight at once, in the storm and in the timed redeploys.
	scaleDeployers   = 16
	scaleRedeployers = 4
	// scaleLimit bounds each wait of the benchmark: a bound on a failure,
	// not a measurement.
	scaleLimit = 3 * time.Minute
)

// ControlPlaneScale is B9: a real `surge server` (embedded etcd, API,
// controllers, autoscaler) in its own process, with 1,000 simulated nodes
// (each registers, beats every second over its own connection, and
// reports the replicas bound to it Ready at once) and 20 simulated
// gateways (each lists and watches functions, revisions, traffic and
// replicas, as a gateway's control-plane source does, and knows when it
// can route a revision). 10,000 functions are deployed through the API,
// 16 at a time; then 200 of them get a new revision, 4 at a time, each
// timed from its deploy until every gateway routes it (its replica Ready,
// the traffic moved). It reports the API's deploy latency, that routing
// time, and the server's memory (resident set, etcd included) per node
// and per function.
//
// What it does not simulate: a node agent's own watch of its replicas
// (`?node=`; the fleet uses one watch for all 1,000 nodes) and gossip.
func ControlPlaneScale(ctx context.Context) (_ []Row, retErr error) {
	srv, err := startSurgeServer(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, srv.close()) }()
	return runScale(ctx, srv)
}

// runScale is B9 against a running server.
func runScale(ctx context.Context, srv *surgeServer) ([]Row, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel()

	idle, err := srv.rss()
	if err != nil {
		return nil, err
	}
	// The nodes, beating.
	fleet, err := newSimFleet(ctx, srv, scaleNodes)
	if err != nil {
		return nil, err
	}
	bg.Go(func() { fleet.beat(ctx) })
	if err := settle(ctx); err != nil {
		return nil, err
	}
	withNodes, err := srv.rss()
	if err != nil {
		return nil, err
	}
	bg.Go(func() { fleet.serve(ctx) })
	gws := make([]*simGateway, scaleGateways)
	for i := range gws {
		gw, err := newSimGateway(srv, fmt.Sprintf("gw-%02d", i))
		if err != nil {
			return nil, err
		}
		gws[i] = gw
		bg.Go(func() { gw.run(ctx) })
	}

	// The storm: every function, deployed once.
	admin, err := client.New(srv.admin)
	if err != nil {
		return nil, err
	}
	deploys := make([]time.Duration, scaleFunctions)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(scaleDeployers)
	for i := range scaleFunctions {
		g.Go(func() error {
			start := time.Now()
			_, err := admin.PutFunction(gctx, scaleFunction(i, 1))
			deploys[i] = time.Since(start)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	stormDone := time.Now()
	// Every gateway routes every function.
	for _, gw := range gws {
		if err := gw.waitRouted(ctx, scaleFunctions, stormDone.Add(scaleLimit)); err != nil {
			return nil, fmt.Errorf("after the storm: %w (%d of %d replicas reported Ready)", err, fleet.readied.Load(), scaleFunctions)
		}
	}
	settledIn := time.Since(stormDone)
	withFunctions, err := srv.rss()
	if err != nil {
		return nil, err
	}

	// The timed redeploys.
	routes := make([]time.Duration, scaleRedeploys)
	redeploy := make([]time.Duration, scaleRedeploys)
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(scaleRedeployers)
	for i := range scaleRedeploys {
		g.Go(func() error {
			n := i * (scaleFunctions / scaleRedeploys)
			start := time.Now()
			if _, err := admin.PutFunction(gctx, scaleFunction(n, 2)); err != nil {
				return err
			}
			redeploy[i] = time.Since(start)
			for _, gw := range gws {
				if err := gw.waitRoute(gctx, scaleName(n), api.RevisionName(scaleName(n), 2), start.Add(scaleLimit)); err != nil {
					return err
				}
			}
			routes[i] = time.Since(start)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("redeploy: %w", err)
	}
	perNode := float64(withNodes-idle) / scaleNodes
	perFunction := float64(withFunctions-withNodes) / scaleFunctions
	return []Row{
		{Bench: "B9", Subject: fmt.Sprintf("API deploy, %d functions, %d at once", scaleFunctions, scaleDeployers), Samples: deploys,
			Note: goal("p99", Quantile(deploys, 0.99), scaleDeployGoal) + fmt.Sprintf("; all routed by every gateway %s after the last", settledIn.Round(100*time.Millisecond))},
		{Bench: "B9", Subject: fmt.Sprintf("new revision routed by all %d gateways, %d at once", scaleGateways, scaleRedeployers), Samples: routes,
			Note: goal("p99", Quantile(routes, 0.99), scaleRouteGoal) + fmt.Sprintf("; its deploy call p99 %s", round(Quantile(redeploy, 0.99)))},
		{Bench: "B9", Subject: fmt.Sprintf("server memory per node (%d nodes)", scaleNodes), Value: perNode / 1024, Unit: "KiB",
			Note: fmt.Sprintf("resident set, etcd included: %d MiB idle, %d MiB with the nodes", idle>>20, withNodes>>20)},
		{Bench: "B9", Subject: fmt.Sprintf("server memory per function (%d functions)", scaleFunctions), Value: perFunction / 1024, Unit: "KiB",
			Note: fmt.Sprintf("%d MiB with the functions; each has a revision, scale, traffic and replica", withFunctions>>20)},
	}, nil
}

// settle waits for a burst's garbage and connections to settle before a
// memory reading.
func settle(ctx context.Context) error {
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func scaleName(i int) string { return fmt.Sprintf("fn-%05d", i) }

// scaleFunction is function i's spec at its rev-th deploy: a pinned image
// (nothing to resolve), one replica at least, so that the autoscaler keeps
// it while nothing calls it.
func scaleFunction(i, rev int) *api.Function {
	f := &api.Function{
		Metadata: api.ObjectMeta{Name: scaleName(i)},
		Spec: api.FunctionSpec{
			Image: fmt.Sprintf("registry.example/fn@sha256:%064x", i%500),
			Env:   []api.EnvVar{{Name: "REV", Value: fmt.Sprint(rev)}},
		},
	}
	f.Spec.Scaling.MinScale = 1
	return f
}

// surgeServer is a `surge server` process of the benchmark's.
type surgeServer struct {
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
	// admin, node and gateway are the clients of the three roles.
	admin, node, gateway *client.Config
}

// startSurgeServer builds surge and starts `surge server` on loopback
// ports in a temporary directory; it returns once the API answers. On
// error nothing is left.
func startSurgeServer(ctx context.Context) (_ *surgeServer, retErr error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "surge-bench-scale-")
	if err != nil {
		return nil, err
	}
	s := &surgeServer{dir: dir, log: filepath.Join(dir, "server.log")}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, s.close())
		}
	}()
	bin := filepath.Join(dir, "surge")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/surge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return s, fmt.Errorf("build surge: %w\n%s", err, out)
	}
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return s, err
		}
	}
	logf, err := os.Create(s.log)
	if err != nil {
		return s, err
	}
	defer logf.Close()
	data := filepath.Join(dir, "data")
	s.cmd = exec.Command(bin, "server", "--data-dir", data, "--name", "bench",
		"--api-addr", addrs[0], "--etcd-client-addr", addrs[1], "--etcd-peer-addr", addrs[2],
		"--gossip-addr", "", "--pod-cidr", "10.0.0.0/8", "--log-level", "warn")
	s.cmd.Env = append(os.Environ(), "SURGE_CONFIG="+filepath.Join(dir, "config.yaml"))
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return s, fmt.Errorf("start surge server: %w", err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	err = poll(ctx, time.Minute, 100*time.Millisecond, func() error {
		select {
		case <-s.exited:
			return stopPolling{fmt.Errorf("surge server exited: %v", s.cmd.ProcessState)}
		default:
		}
		cfg, err := client.LoadConfig(filepath.Join(data, "admin.yaml"))
		if err != nil {
			return err
		}
		c, err := client.New(cfg)
		if err != nil {
			return err
		}
		if _, err := client.List[api.Node](ctx, c, "", nil); err != nil {
			return err
		}
		s.admin = cfg
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("surge server not serving: %w; its output ends:\n%s", err, tail(s.log, 2000))
	}
	for _, role := range []struct {
		file string
		cfg  **client.Config
	}{{"join-token", &s.node}, {"gateway-token", &s.gateway}} {
		b, err := os.ReadFile(filepath.Join(data, role.file))
		if err != nil {
			return s, err
		}
		c := *s.admin
		c.Token = strings.TrimSpace(string(b))
		*role.cfg = &c
	}
	return s, nil
}

// rss is the server's resident set, in bytes.
func (s *surgeServer) rss() (int64, error) {
	if s.cmd == nil {
		return 0, nil // in this process: not measured
	}
	return treeRSS(s.cmd.Process.Pid)
}

// close stops the server (SIGTERM, then SIGKILL) and removes its
// directory.
func (s *surgeServer) close() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(30 * time.Second)
		select {
		case <-s.exited:
		case <-t.C:
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			err = errors.New("surge server did not stop on SIGTERM within 30s")
		}
		t.Stop()
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// simFleet is the simulated nodes: each joined as an agent joins (the
// join token traded once for the node's own certificate, with which it
// registers), beating every second over its own connection, and
// reporting Ready at once every replica bound to it, at an address of its
// pod subnet.
type simFleet struct {
	names   []string
	clients map[string]*client.Client
	subnets map[string]netip.Prefix
	readied atomic.Int64
	beats   atomic.Int64
	failed  atomic.Int64
}

func newSimFleet(ctx context.Context, srv *surgeServer, n int) (*simFleet, error) {
	f := &simFleet{clients: map[string]*client.Client{}, subnets: map[string]netip.Prefix{}}
	join, err := client.New(srv.node)
	if err != nil {
		return nil, err
	}
	defer join.CloseConnections()
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		name := fmt.Sprintf("node-%04d", i)
		f.names = append(f.names, name)
		g.Go(func() error {
			// Every simulated node is on this machine: its address is
			// the one its requests come from.
			cert, err := client.Bootstrap(gctx, join, name, "127.0.0.1")
			if err != nil {
				return fmt.Errorf("join %s: %w", name, err)
			}
			cfg := *srv.node
			cfg.Token = ""
			c, err := client.NewWithCertificate(&cfg, func() *tls.Certificate { return &cert })
			if err != nil {
				return err
			}
			node := &api.Node{
				Metadata: api.ObjectMeta{Name: name},
				Status: api.NodeStatus{Address: "127.0.0.1", State: api.NodeAlive,
					Capacity:    api.NodeResources{CPU: "16", Memory: "64Gi"},
					Allocatable: api.NodeResources{CPU: "16", Memory: "64Gi"}},
			}
			var out api.Node
			if err := c.Do(gctx, "POST", client.CollectionPath[api.Node](""), node, &out); err != nil {
				return fmt.Errorf("register %s: %w", name, err)
			}
			subnet, err := netip.ParsePrefix(out.Spec.PodSubnet)
			if err != nil {
				return fmt.Errorf("register %s: pod subnet %q: %w", name, out.Spec.PodSubnet, err)
			}
			mu.Lock()
			f.clients[name], f.subnets[name] = c, subnet
			mu.Unlock()
			return c.Do(gctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: name})+"/lease", nil, nil)
		})
	}
	return f, g.Wait()
}

// beat renews every node's lease every second, spread over the second,
// until ctx ends.
func (f *simFleet) beat(ctx context.Context) {
	var wg sync.WaitGroup
	for i, name := range f.names {
		wg.Go(func() {
			offset := time.Duration(i) * time.Second / time.Duration(len(f.names))
			if !sleepCtx(ctx, offset) {
				return
			}
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := f.clients[name].Do(bctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: name})+"/lease", nil, nil)
				cancel()
				if err != nil && ctx.Err() == nil {
					f.failed.Add(1)
				} else {
					f.beats.Add(1)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	wg.Wait()
}

// serve watches the replicas and reports each one bound to a node of the
// fleet Ready, through that node's client, until ctx ends.
func (f *simFleet) serve(ctx context.Context) {
	todo := make(chan *api.Replica, 1024)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for r := range todo {
				c := f.clients[r.Spec.NodeName]
				ip := f.subnets[r.Spec.NodeName].Addr().Next().Next()
				r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: ip.String(), Port: 8080, StartLatency: "1ms"}
				r.Metadata.ResourceVersion = ""
				if err := c.Do(ctx, "PUT", client.ObjectPath[api.Replica](api.KeyOf(r))+"/status", r, nil); err == nil {
					f.readied.Add(1)
				}
			}
		})
	}
	defer func() { close(todo); wg.Wait() }()
	watcher := f.clients[f.names[0]]
	watchAll(ctx, watcher, func(e api.WatchEvent[*api.Replica]) {
		r := e.Object
		if e.Type == api.EventDeleted || r.Spec.NodeName == "" || r.Status.Phase == api.ReplicaReady || f.clients[r.Spec.NodeName] == nil {
			return
		}
		select {
		case todo <- r:
		case <-ctx.Done():
		}
	}, nil)
}

// watchAll lists and then watches the objects of type T in every
// namespace, calling fn for each (listed ones as ADDED), and reset before
// a list that replaces what was known, until ctx ends.
func watchAll[T any, P api.ObjectPtr[T]](ctx context.Context, c *client.Client, fn func(api.WatchEvent[*T]), reset func()) {
	for ctx.Err() == nil {
		list, err := client.List[T, P](ctx, c, "", nil)
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		if reset != nil {
			reset()
		}
		for i := range list.Items {
			fn(api.WatchEvent[*T]{Type: api.EventAdded, Object: &list.Items[i]})
		}
		_ = client.Watch[T, P](ctx, c, "", client.WatchOptions{ResourceVersion: list.ResourceVersion},
			func(e api.WatchEvent[*T]) error {
				if e.Object != nil {
					fn(e)
				}
				return nil
			})
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// simGateway is a gateway's view of the control plane: the traffic of
// each function, the revisions, and the Ready replicas of each revision,
// from the same lists and watches as gateway.ControlPlaneSource.
type simGateway struct {
	name string
	c    *client.Client

	mu        sync.Mutex
	traffic   map[string][]api.TrafficTarget // by function
	revisions map[string]bool
	ready     map[string]string // Ready replica → its revision
	byRev     map[string]int    // revision → Ready replicas
	// routed is, for each function, the highest revision number that
	// takes traffic and that the gateway can route; routedAny counts the
	// functions it routes at all.
	routed    map[string]int64
	routedAny int
	changed   chan struct{} // closed and replaced on every change
}

func newSimGateway(srv *surgeServer, name string) (*simGateway, error) {
	c, err := client.New(srv.gateway)
	if err != nil {
		return nil, err
	}
	return &simGateway{name: name, c: c, traffic: map[string][]api.TrafficTarget{}, revisions: map[string]bool{},
		ready: map[string]string{}, byRev: map[string]int{}, routed: map[string]int64{}, changed: make(chan struct{})}, nil
}

func (g *simGateway) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		watchAll(ctx, g.c, func(e api.WatchEvent[*api.Traffic]) {
			g.update(e.Object.Metadata.Name, func() {
				if e.Type == api.EventDeleted {
					delete(g.traffic, e.Object.Metadata.Name)
				} else {
					g.traffic[e.Object.Metadata.Name] = e.Object.Spec.Targets
				}
			})
		}, nil)
	})
	wg.Go(func() {
		watchAll(ctx, g.c, func(e api.WatchEvent[*api.Revision]) {
			g.update(e.Object.Spec.Function, func() {
				if e.Type == api.EventDeleted {
					delete(g.revisions, e.Object.Metadata.Name)
				} else {
					g.revisions[e.Object.Metadata.Name] = true
				}
			})
		}, nil)
	})
	wg.Go(func() {
		watchAll(ctx, g.c, func(e api.WatchEvent[*api.Replica]) {
			r := e.Object
			g.update(r.Spec.Function, func() {
				name := r.Metadata.Name
				if rev, ok := g.ready[name]; ok {
					delete(g.ready, name)
					g.byRev[rev]--
				}
				if e.Type != api.EventDeleted && r.Status.Phase == api.ReplicaReady {
					g.ready[name] = r.Spec.Revision
					g.byRev[r.Spec.Revision]++
				}
			})
		}, nil)
	})
	wg.Go(func() {
		// Functions too, as a gateway reads them: their default revision.
		watchAll(ctx, g.c, func(api.WatchEvent[*api.Function]) {}, nil)
	})
	wg.Wait()
}

// update applies a change about function fn and records what it routes.
func (g *simGateway) update(fn string, change func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	change()
	best := int64(0)
	for _, t := range g.traffic[fn] {
		if t.Percent == 0 || !g.revisions[t.Revision] || g.byRev[t.Revision] == 0 {
			continue
		}
		if _, n, ok := api.ParseRevisionName(t.Revision); ok && n > best {
			best = n
		}
	}
	if old := g.routed[fn]; best != old {
		switch {
		case old == 0:
			g.routedAny++
		case best == 0:
			g.routedAny--
		}
		g.routed[fn] = best
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// waitRoute waits until the gateway routes rev of fn.
func (g *simGateway) waitRoute(ctx context.Context, fn, rev string, deadline time.Time) error {
	_, want, _ := api.ParseRevisionName(rev)
	return g.waitFor(ctx, deadline, func() bool { return g.routed[fn] >= want },
		func() string { return fmt.Sprintf("gateway %s does not route %s", g.name, rev) })
}

// waitRouted waits until the gateway routes n functions.
func (g *simGateway) waitRouted(ctx context.Context, n int, deadline time.Time) error {
	return g.waitFor(ctx, deadline, func() bool { return g.routedAny >= n },
		func() string { return fmt.Sprintf("gateway %s routes %d of %d functions", g.name, g.routedAny, n) })
}

func (g *simGateway) waitFor(ctx context.Context, deadline time.Time, cond func() bool, what func() string) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		g.mu.Lock()
		ok, ch := cond(), g.changed
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			g.mu.Lock()
			defer g.mu.Unlock()
			return fmt.Errorf("%s at the deadline", what())
		}
	}
}
