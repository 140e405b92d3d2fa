package controlplane

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// etcdStartTimeout bounds how long a member may take to join its cluster
// and elect a leader before start fails.
const etcdStartTimeout = time.Minute

// startEmbeddedEtcd starts the member this server embeds and returns it
// with an in-process client, which skips the network and TLS for the
// server's own requests.
func startEmbeddedEtcd(ctx context.Context, c Config, pkiDir string) (*embed.Etcd, *clientv3.Client, error) {
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
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(etcdStartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd not ready after %s: see %s", etcdStartTimeout, cfg.LogOutputs[0])
	case <-ctx.Done():
		e.Close()
		return nil, nil, ctx.Err()
	}
	return e, v3client.New(e.Server), nil
}

// dialEtcd connects to an external etcd cluster.
func dialEtcd(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return cli, nil
}
