// Package etcdtest starts an embedded etcd member for the tests of the
// packages that keep state in etcd (store, auth, apiserver, leader,
// controllers): a real etcd, as the server runs it, without the rest of
// the server.
package etcdtest

import (
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// startTimeout bounds how long the member may take to elect itself. It is
// a bound on a failure, not a measurement: a healthy member is ready in
// well under a second.
const startTimeout = time.Minute

// FreePort returns a loopback address with a port nobody listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start runs a single-member etcd in t's temporary directory and returns
// an in-process client of it (as the server's own). The member and the
// client are closed when the test ends.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	client := url.URL{Scheme: "http", Host: FreePort(t)}
	peer := url.URL{Scheme: "http", Host: FreePort(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		t.Fatalf("etcd: %v", err)
	case <-time.After(startTimeout):
		e.Close()
		t.Fatalf("etcd not ready after %s; see %s", startTimeout, cfg.LogOutputs[0])
	}
	cli := v3client.New(e.Server)
	t.Cleanup(func() {
		cli.Close()
		e.Close()
	})
	return cli
}
