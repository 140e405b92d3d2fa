// Package controlplane runs Surge's control plane: etcd (embedded or
// external), the HTTPS API with the built-in image registry, and, on the
// server elected leader, the controllers (replicas, scheduling, nodes,
// rollouts) and the autoscaler. A server may also be a gossip member, to
// hear of dead nodes at gossip speed.
//
// Server.Run goes through its steps in order — data directory, joining a
// cluster (first start only), PKI, etcd, the API handler, tokens, gossip,
// the leader's work, the server's entry in the cluster, serving — and
// undoes them in reverse when its context ends.
//
// Several servers make one cluster: each embeds an etcd member (peer
// traffic over mutual TLS from the cluster CA), serves the API and a copy
// of the registry, and campaigns to be the one leader of the controllers
// and the autoscaler.
package controlplane

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/autoscaling"
	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/internal/telemetry"
)

// shutdownGrace bounds how long in-flight API requests may take to finish
// once the server is told to stop; watches are cut at once. It is a
// deadline on the network, in wall-clock time like every deadline on I/O,
// so that a fake Clock never holds a stop.
const shutdownGrace = 5 * time.Second

// Server is one control-plane server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	version string
	clock   clock.Clock
	// registerer takes the server's metrics; gatherer serves them at the
	// API's /metrics.
	registerer prometheus.Registerer
	gatherer   prometheus.Gatherer
	ready      chan struct{}

	// Set before ready is closed; read-only after.
	addr  string
	admin *client.Config
	store *store.Store
	join  string
	// gateway is a gateway-role token.
	gateway string
	// gossipAddr is where the server's gossip member listens.
	gossipAddr string
	// gossipKey keys the cluster's gossip.
	gossipKey []byte
}

// GossipAddr is where the server gossips ("" when it does not); valid
// after Ready. Agents and gateways may join there.
func (s *Server) GossipAddr() string { return s.gossipAddr }

// New checks the configuration and returns a server ready to Run. A
// Server runs once.
func New(cfg Config, log *slog.Logger, version string) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, version: version, clock: cfg.Clock, ready: make(chan struct{})}
	switch {
	case cfg.Registerer == nil:
		reg := telemetry.NewProcessRegistry(version)
		s.registerer, s.gatherer = reg, reg
	case cfg.Gatherer != nil:
		s.registerer, s.gatherer = cfg.Registerer, cfg.Gatherer
	default:
		s.registerer, s.gatherer = cfg.Registerer, cfg.Registerer.(prometheus.Gatherer) // checked by Validate
	}
	return s, nil
}

// Ready is closed once the API is serving.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the API's listening address; valid after Ready.
func (s *Server) Addr() string { return s.addr }

// AdminConfig is the admin client config; valid after Ready.
func (s *Server) AdminConfig() *client.Config { return s.admin }

// JoinToken is the token agents join with; valid after Ready.
func (s *Server) JoinToken() string { return s.join }

// GossipKey is the cluster's gossip key; valid after Ready.
func (s *Server) GossipKey() []byte { return s.gossipKey }

// GatewayToken is a token gateways use; valid after Ready.
func (s *Server) GatewayToken() string { return s.gateway }

// Store is the object store; valid after Ready. Roles running in the same
// process (controllers, the autoscaler) use it directly.
func (s *Server) Store() *store.Store { return s.store }

// Run starts the control plane and serves the API until ctx ends, then
// stops everything it started, in reverse, and returns. It returns early
// with an error if a step fails to start, or if the API or embedded etcd
// fails while serving.
func (s *Server) Run(ctx context.Context) error {
	if err := s.prepareDataDir(); err != nil {
		return err
	}
	j, err := s.joinCluster(ctx)
	if err != nil {
		return err
	}
	certs, err := s.loadPKI()
	if err != nil {
		return err
	}
	db, err := s.startEtcd(ctx, certs, j)
	if err != nil {
		return err
	}
	defer db.close()
	if db.member != nil && db.member.Server.IsLearner() {
		if err := s.promoteSelf(ctx, db.member, db.client); err != nil {
			return err
		}
	}
	if err := checkStorageVersion(ctx, db.client); err != nil {
		return err
	}
	if err := instrumentEtcd(db.client, s.registerer, s.clock); err != nil {
		return err
	}

	parts, err := s.build(db, certs)
	if err != nil {
		return err
	}
	defer parts.peers.close()
	ln, err := net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on --api-addr %s: %w", s.cfg.APIAddr, err)
	}
	defer ln.Close() // serving closes it too; this covers the steps before
	s.addr = ln.Addr().String()
	if err := s.bootstrapTokens(ctx, parts.tokens, certs.ca.CertPEM); err != nil {
		return err
	}
	if err := parts.peers.setAuth(certs.ca.CertPEM, s.admin.Token); err != nil {
		return err
	}
	s.store = parts.store

	s.gossipKey = certs.gossipKey
	stopGossip, err := s.startGossip(parts.controllers, certs.gossipKey)
	if err != nil {
		return err
	}
	defer stopGossip()
	stopBackground := s.runInBackground(ctx, db, parts)
	defer stopBackground()

	return s.serve(ctx, ln, parts.api, certs, db.errs())
}

// prepareDataDir makes the data directory, private to this user.
func (s *Server) prepareDataDir() error {
	if err := os.MkdirAll(filepath.Join(s.cfg.DataDir, "logs"), 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("secure data dir: %w", err)
	}
	return nil
}

// certs are the cluster CA, the API's serving certificate, the node CA
// and the API server's client certificate towards node agents.
type certs struct {
	dir string
	ca  *pki.CA
	api tls.Certificate
	// nodes signs nodes' certificates (see pki.NodeCA).
	nodes *pki.NodeCA
	// agentClient is the API server's client certificate for node
	// agents, from the cluster CA: what the agents trust.
	agentClient tls.Certificate
	// gossipKey keys the cluster's gossip (see pki.LoadOrCreateGossipKey).
	gossipKey []byte
}

// loadPKI loads the CAs and the API's certificates from the data dir,
// making them at the first start and renewing a certificate when it nears
// its expiry or lacks a host.
func (s *Server) loadPKI() (*certs, error) {
	dir := filepath.Join(s.cfg.DataDir, "pki")
	now := s.clock.Now()
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		return nil, err
	}
	api, err := ca.LoadOrIssue(filepath.Join(dir, "apiserver"), pki.Leaf{
		CommonName: "surge-apiserver", Server: true, Hosts: s.apiHosts(),
	}, now)
	if err != nil {
		return nil, fmt.Errorf("API certificate: %w", err)
	}
	c := &certs{dir: dir, ca: ca, api: api}
	if err := s.loadNodePKI(c, now); err != nil {
		return nil, err
	}
	if c.gossipKey, err = pki.LoadOrCreateGossipKey(dir); err != nil {
		return nil, err
	}
	return c, nil
}

// build makes the parts the server runs on etcd, before any of them
// starts: the stores, the autoscaler, the registry (replicated among the
// servers), the controllers with the leader's tasks, and the API handler.
func (s *Server) build(db *etcdConn, c *certs) (*parts, error) {
	cli := db.client
	p := &parts{store: store.New(cli, s.clock), tokens: auth.NewStore(cli, s.clock), peers: &peers{self: s.cfg.Name, cli: cli}}
	var err error
	acfg := s.cfg.Autoscaling
	if acfg.MaxReplicas == 0 {
		acfg.MaxReplicas = int(apiserver.DefaultLimits().MaxReplicas) // the bound the API puts on maxScale
	}
	if p.scaler, err = autoscaling.New(acfg, p.store, store.NewGatewayLoad(p.store, s.cfg.Autoscaling.StatsMaxAge), s.clock, s.log, s.registerer); err != nil {
		return nil, fmt.Errorf("autoscaler: %w", err)
	}
	if p.images, err = registry.New(registry.Config{
		Dir:   filepath.Join(s.cfg.DataDir, "registry"),
		Log:   s.log.With("component", "registry"),
		Clock: s.clock,
	}); err != nil {
		return nil, err
	}
	tasks := []controllers.LeaderTask{p.scaler.Run, s.collectImages(p), s.expireStats(p.store)}
	if db.member != nil {
		tasks = append(tasks, s.keepEtcdLeaderAway(db.member, cli, p.peers))
	}
	if p.controllers, err = controllers.New(s.cfg.Controllers, p.store, s.log, s.clock, s.registerer, s.cfg.Name, tasks...); err != nil {
		return nil, err
	}
	images := &replicated{local: p.images, peers: p.peers, etcd: cli, log: s.log.With("component", "registry")}
	resolver := &imageResolver{store: p.store, images: p.images, own: s.ownOrPeerRegistry(p.peers),
		followTag: images.followTag, timeout: s.cfg.ResolveTimeout}
	var urls func(api.Key) string
	if s.cfg.GatewayURL != "" {
		urls, _ = functionURLs(s.cfg.GatewayURL) // checked by Validate
	}
	p.api, err = apiserver.New(apiserver.Config{
		Store: p.store, Tokens: p.tokens, Log: s.log, Registerer: s.registerer, Gatherer: s.gatherer,
		Version:        s.version,
		Clock:          s.clock,
		PodCIDR:        netip.MustParsePrefix(s.cfg.PodCIDR), // checked by Validate
		NodeSubnetBits: s.cfg.NodeSubnetBits,
		Extra:          append(registryRoutes(images), append(s.clusterRoutes(db, p), s.discoveryRoute(db, p))...),
		OnActivate:     p.scaler.Activated,
		FunctionURL:    urls,
		ResolveImage:   resolver.resolve,
		Load:           store.NewGatewayLoad(p.store, s.cfg.Autoscaling.StatsMaxAge),
		NodeCA:         c.nodes,
		GossipKey:      c.gossipKey,
		// Its own copy: the API keeps it for as long as it serves.
		AgentClientCertificate: &c.agentClient,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// parts are what the server runs on etcd.
type parts struct {
	store       *store.Store
	tokens      *auth.Store
	scaler      *autoscaling.Runner
	images      *registry.Registry
	controllers *controllers.Manager
	api         *apiserver.Server
	// peers reaches the other servers (registry copies, GC rounds).
	peers *peers
}

// bootstrapTokens makes, at the first start of a cluster, the admin token
// (and client config), the join token, a gateway token and the server
// token, and reads them at later starts and on the servers that joined.
func (s *Server) bootstrapTokens(ctx context.Context, tokens *auth.Store, caPEM []byte) error {
	admin, err := s.bootstrap(ctx, tokens, caPEM)
	if err != nil {
		return err
	}
	join, err := s.roleToken(ctx, tokens, JoinTokenFile, auth.RoleNode)
	if err != nil {
		return err
	}
	gw, err := s.roleToken(ctx, tokens, GatewayTokenFile, auth.RoleGateway)
	if err != nil {
		return err
	}
	if _, err := s.roleToken(ctx, tokens, ServerTokenFile, auth.RoleAdmin); err != nil {
		return err
	}
	s.admin, s.join, s.gateway = admin, join, gw
	return nil
}

// startGossip makes the server a gossip member when GossipAddr is set, so
// that the node controller hears of a dead node when gossip does. It
// returns how to leave.
func (s *Server) startGossip(mgr *controllers.Manager, key []byte) (stop func(), err error) {
	if s.cfg.GossipAddr == "" {
		return func() {}, nil
	}
	live := newLiveness()
	g, err := gossip.Start(gossip.Options{Role: gossip.RoleServer, NodeName: "server-" + s.cfg.Name, Addr: s.cfg.GossipAddr,
		Seeds: s.cfg.GossipJoin, Key: key, Handler: live, Logger: s.log, Clock: s.clock})
	if err != nil {
		return nil, err
	}
	s.gossipAddr = g.LocalNode().Addr.String()
	mgr.UseLiveness(live, live.changed)
	return g.Stop, nil
}

// runInBackground starts what runs beside the API — the controllers,
// which campaign and run the leader's work (the autoscaler, image GC),
// and this server's entry in the cluster's list of servers — and returns
// how to stop them and wait for them.
func (s *Server) runInBackground(ctx context.Context, db *etcdConn, p *parts) (stop func()) {
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.controllers.Run(bctx); err != nil {
			s.log.Error("controllers stopped", "err", err)
		}
	})
	info := api.ServerInfo{Name: s.cfg.Name, APIURL: s.apiURL(), Version: s.version, APIVersion: api.Version,
		MetricsURL: cmp.Or(s.cfg.MetricsURL, s.apiURL()+api.MetricsPath)}
	if db.member != nil {
		info.MemberID = db.member.Server.MemberID().String()
	}
	wg.Go(func() { s.registerServer(bctx, db.client, info) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// serve serves the API on ln until ctx ends or the API or etcd fails, and
// then shuts the API down.
func (s *Server) serve(ctx context.Context, ln net.Listener, h http.Handler, c *certs, etcdErr <-chan error) error {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         apiTLSConfig(c),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// Requests, watches above all, end when ctx does.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("API serving", "addr", "https://"+s.addr, "data-dir", s.cfg.DataDir, "embedded-etcd", etcdErr != nil)
	close(s.ready)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("API server: %w", err)
	case err := <-etcdErr:
		srv.Close()
		<-errc
		return fmt.Errorf("embedded etcd: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("API server: %w", err)
	}
	return nil
}

// apiHosts are the names the API's certificate is valid for.
func (s *Server) apiHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if h, _, err := net.SplitHostPort(s.cfg.APIAddr); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, h)
	}
	return append(hosts, s.cfg.TLSSANs...)
}
