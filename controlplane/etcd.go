package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/surgeplatform/surge/controlplane/pki"
)

// etcdStartTimeout bounds how long a member may take to join its cluster
// and elect a leader before start fails. Like every deadline on etcd, it
// is wall-clock time, not the server's Clock.
const etcdStartTimeout = time.Minute

// etcdConn is the server's etcd: a client, and the member when the server
// embeds it.
type etcdConn struct {
	client *clientv3.Client
	member *embed.Etcd // nil for an external etcd
}

// errs reports the embedded member's fatal errors; nil (never ready) for
// an external etcd.
func (e *etcdConn) errs() <-chan error {
	if e.member == nil {
		return nil
	}
	return e.member.Err()
}

// close closes the client, then stops the embedded member.
func (e *etcdConn) close() {
	e.client.Close()
	if e.member != nil {
		e.member.Close()
	}
}

// startEtcd connects to the external etcd when EtcdEndpoints are set, and
// otherwise starts the embedded member, with a certificate from the
// cluster CA: the first member of a new cluster, or, when j says so, a
// member joining the cluster j names (ClusterState "existing"). A member
// whose data dir holds etcd's data restarts from it, whatever j says.
func (s *Server) startEtcd(ctx context.Context, c *certs, j *joined) (*etcdConn, error) {
	if len(s.cfg.EtcdEndpoints) > 0 {
		cli, err := dialEtcd(ctx, s.cfg)
		if err != nil {
			return nil, err
		}
		return &etcdConn{client: cli}, nil
	}
	if _, err := c.ca.LoadOrIssue(filepath.Join(c.dir, "etcd"), pki.Leaf{
		CommonName: "surge-etcd-" + s.cfg.Name, Server: true, Client: true, Hosts: etcdHosts(s.cfg),
	}, s.clock.Now()); err != nil {
		return nil, fmt.Errorf("etcd certificate: %w", err)
	}
	initial := ""
	if j != nil {
		initial = j.initialCluster
	}
	e, cli, err := startEmbeddedEtcd(ctx, s.cfg, c.dir, initial)
	if err != nil {
		return nil, err
	}
	return &etcdConn{client: cli, member: e}, nil
}

// Raft timing of the embedded members: etcd's defaults, a heartbeat every
// 100ms and an election after 1s without one. The election timeout is how
// long a killed etcd leader stalls writes; shorter ones misfire on a busy
// machine. It also sets etcd's floor on a lease's TTL, 1.5 election
// timeouts rounded up (2s), and on a new etcd leader every lease gets one
// election timeout more (see controllers.Config.LeaseTTL).
const (
	etcdHeartbeat       = 100 * time.Millisecond
	etcdElectionTimeout = time.Second
)

// startEmbeddedEtcd starts the member this server embeds and returns it
// with an in-process client, which skips the network and TLS for the
// server's own requests. initialCluster, when set, is the cluster the
// member joins (NAME=PEER_URL,…, this member included).
func startEmbeddedEtcd(ctx context.Context, c Config, pkiDir, initialCluster string) (*embed.Etcd, *clientv3.Client, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = filepath.Join(c.DataDir, "etcd")
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(c.DataDir, "logs", "etcd.log")}
	clientURL := url.URL{Scheme: "https", Host: c.EtcdClientAddr}
	peerURL := url.URL{Scheme: "https", Host: c.EtcdPeerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if initialCluster != "" {
		cfg.InitialCluster, cfg.ClusterState = initialCluster, embed.ClusterStateFlagExisting
	}
	cfg.TickMs, cfg.ElectionMs = uint(etcdHeartbeat/time.Millisecond), uint(etcdElectionTimeout/time.Millisecond)
	// Peers and clients alike present a certificate from the cluster CA:
	// the peer traffic between servers is mutual TLS.
	tls := transport.TLSInfo{
		CertFile:       filepath.Join(pkiDir, "etcd.crt"),
		KeyFile:        filepath.Join(pkiDir, "etcd.key"),
		TrustedCAFile:  filepath.Join(pkiDir, "ca.crt"),
		ClientCertAuth: true,
	}
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = tls, tls
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = c.CompactionRetention
	// Bookmarks every few seconds let watchers resume close to now.
	cfg.WatchProgressNotifyInterval = 5 * time.Second

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	timeout := time.NewTimer(etcdStartTimeout)
	defer timeout.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd: %w", err)
	case <-timeout.C:
		e.Server.Stop()
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd not ready after %s: see %s", etcdStartTimeout, cfg.LogOutputs[0])
	case <-ctx.Done():
		e.Close()
		return nil, nil, ctx.Err()
	}
	return e, v3client.New(e.Server), nil
}

// dialEtcd connects to an external etcd cluster, over TLS with the
// configured CA and client certificate when they are given.
func dialEtcd(ctx context.Context, c Config) (*clientv3.Client, error) {
	cc := clientv3.Config{Endpoints: c.EtcdEndpoints, DialTimeout: 5 * time.Second, Context: ctx}
	if c.EtcdCAFile != "" || c.EtcdCertFile != "" {
		info := transport.TLSInfo{CertFile: c.EtcdCertFile, KeyFile: c.EtcdKeyFile, TrustedCAFile: c.EtcdCAFile}
		t, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS (--etcd-cafile, --etcd-certfile, --etcd-keyfile): %w", err)
		}
		cc.TLS = t
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", c.EtcdEndpoints, err)
	}
	// The client connects lazily, and retries a refused handshake for as
	// long as a request waits: one read says now whether etcd takes us.
	pctx, cancel := context.WithTimeout(ctx, cc.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, storageVersionKey); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("etcd %v does not answer: check --etcd-endpoints, --etcd-cafile, --etcd-certfile and --etcd-keyfile: %w", c.EtcdEndpoints, err)
	}
	return cli, nil
}

// etcdHosts are the names the embedded member's certificate is valid for.
func etcdHosts(c Config) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, a := range []string{c.EtcdClientAddr, c.EtcdPeerAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// hasEtcdData reports whether the data dir holds an embedded member's data
// (the member has started before, and restarts from it).
func hasEtcdData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "etcd", "member"))
	return err == nil
}
