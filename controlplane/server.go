// Package controlplane runs Surge's control plane: etcd (embedded or
// external), the API server, and, as later parts land, the scheduler,
// controllers and autoscaler leader.
package controlplane

import (
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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

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
)

// shutdownGrace bounds how long in-flight API requests may take to finish
// once the server is told to stop; watches are cut at once.
const shutdownGrace = 5 * time.Second

// Server is one control-plane server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	version string
	ready   chan struct{}

	// Set before ready is closed; read-only after.
	addr  string
	admin *client.Config
	store *store.Store
	join  string
	// gateway is a gateway-role token.
	gateway string
	// gossipAddr is where the server's gossip member listens.
	gossipAddr string
}

// GossipAddr is where the server gossips ("" when it does not); valid
// after Ready. Agents and gateways may join there.
func (s *Server) GossipAddr() string { return s.gossipAddr }

// New checks the configuration and returns a server ready to Run.
func New(cfg Config, log *slog.Logger, version string) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log, version: version, ready: make(chan struct{})}, nil
}

// Ready is closed once the API is serving.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the API's listening address; valid after Ready.
func (s *Server) Addr() string { return s.addr }

// AdminConfig is the admin client config; valid after Ready.
func (s *Server) AdminConfig() *client.Config { return s.admin }

// JoinToken is the token agents join with; valid after Ready.
func (s *Server) JoinToken() string { return s.join }

// GatewayToken is a token gateways use; valid after Ready.
func (s *Server) GatewayToken() string { return s.gateway }

// Store is the object store; valid after Ready. Roles running in the same
// process (controllers, the autoscaler) use it directly.
func (s *Server) Store() *store.Store { return s.store }

// Run starts etcd and the API and serves until ctx ends, then stops both
// and returns. It returns early with an error if either fails to start.
func (s *Server) Run(ctx context.Context) error {
	c := s.cfg
	if err := os.MkdirAll(filepath.Join(c.DataDir, "logs"), 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("secure data dir: %w", err)
	}
	pkiDir := filepath.Join(c.DataDir, "pki")
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(pkiDir, now)
	if err != nil {
		return err
	}
	apiCert, err := ca.LoadOrIssue(filepath.Join(pkiDir, "apiserver"), pki.Leaf{
		CommonName: "surge-apiserver", Server: true, Hosts: s.apiHosts(),
	}, now)
	if err != nil {
		return fmt.Errorf("API certificate: %w", err)
	}

	var etcd *embed.Etcd
	var cli *clientv3.Client
	if len(c.EtcdEndpoints) > 0 {
		cli, err = dialEtcd(ctx, c.EtcdEndpoints)
	} else {
		if _, err = ca.LoadOrIssue(filepath.Join(pkiDir, "etcd"), pki.Leaf{
			CommonName: "surge-etcd-" + c.Name, Server: true, Client: true, Hosts: etcdHosts(c),
		}, now); err != nil {
			return fmt.Errorf("etcd certificate: %w", err)
		}
		etcd, cli, err = startEmbeddedEtcd(ctx, c, pkiDir)
	}
	if err != nil {
		return err
	}
	defer func() {
		cli.Close()
		if etcd != nil {
			etcd.Close()
		}
	}()

	st := store.New(cli, time.Now)
	tokens := auth.NewStore(cli, time.Now)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	scaler, err := autoscaling.New(c.Autoscaling, st, store.NewGatewayLoad(st, c.Autoscaling.StatsMaxAge), clock.Real(), s.log, reg)
	if err != nil {
		return fmt.Errorf("autoscaler: %w", err)
	}
	images, err := registry.New(registry.Config{
		Dir: filepath.Join(c.DataDir, "registry"),
		Log: s.log.With("component", "registry"),
	})
	if err != nil {
		return err
	}
	handler, err := apiserver.New(apiserver.Config{
		Store: st, Tokens: tokens, Log: s.log, Registerer: reg, Gatherer: reg,
		Ready: func(ctx context.Context) error {
			_, err := cli.Get(ctx, store.Prefix+"readyz", clientv3.WithCountOnly())
			return err
		},
		Version:        s.version,
		Now:            time.Now,
		PodCIDR:        netip.MustParsePrefix(c.PodCIDR),
		NodeSubnetBits: c.NodeSubnetBits,
		Extra:          registryRoutes(images),
		OnActivate:     scaler.Activated,
		SignCSR: func(csr []byte, cn string, hosts []string) ([]byte, []byte, error) {
			cert, err := ca.SignCSR(csr, cn, hosts, time.Now())
			return cert, ca.CertPEM, err
		},
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on --api-addr %s: %w", c.APIAddr, err)
	}
	s.addr = ln.Addr().String()
	admin, err := s.bootstrap(ctx, tokens, ca.CertPEM)
	if err != nil {
		ln.Close()
		return err
	}
	join, err := s.roleToken(ctx, tokens, JoinTokenFile, auth.RoleNode)
	if err != nil {
		ln.Close()
		return err
	}
	gw, err := s.roleToken(ctx, tokens, GatewayTokenFile, auth.RoleGateway)
	if err != nil {
		ln.Close()
		return err
	}
	s.admin, s.store, s.join, s.gateway = admin, st, join, gw

	mgr := controllers.New(c.Controllers, st, s.log, time.Now, c.Name, scaler.Run)
	if c.GossipAddr != "" {
		// The server is a gossip member too, so that the node controller
		// hears of a dead node when gossip does.
		live := newLiveness()
		g, err := gossip.Start(gossip.Options{Role: gossip.RoleServer, NodeName: "server-" + c.Name, Addr: c.GossipAddr,
			Seeds: c.GossipJoin, JoinToken: join, Handler: live, Logger: s.log})
		if err != nil {
			ln.Close()
			return err
		}
		defer g.Stop()
		s.gossipAddr = g.LocalNode().Addr.String()
		mgr.UseLiveness(live, live.changed)
	}
	mctx, stopControllers := context.WithCancel(ctx)
	mdone := make(chan error, 1)
	go func() { mdone <- mgr.Run(mctx) }()
	defer func() { stopControllers(); <-mdone }()

	gcDone := make(chan struct{})
	go func() { defer close(gcDone); s.collectImages(mctx, st, images) }()
	defer func() { stopControllers(); <-gcDone }()

	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("API serving", "addr", "https://"+s.addr, "data-dir", c.DataDir, "embedded-etcd", etcd != nil)
	close(s.ready)

	var etcdErr <-chan error
	if etcd != nil {
		etcdErr = etcd.Err()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("API server: %w", err)
	case err := <-etcdErr:
		srv.Close()
		return fmt.Errorf("embedded etcd: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
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

func etcdHosts(c Config) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, a := range []string{c.EtcdClientAddr, c.EtcdPeerAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
