package controlplane_test

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/pki"
)

// TestServerOnExternalEtcd runs the API on an etcd the server does not
// embed, as operators with an existing etcd cluster do.
func TestServerOnExternalEtcd(t *testing.T) {
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(t.TempDir(), "etcd.log")}
	client := url.URL{Scheme: "http", Host: controlplanetest.FreePort(t)}
	peer := url.URL{Scheme: "http", Host: controlplanetest.FreePort(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup, registered before the server's, so that the server stops
	// first, while its etcd still answers.
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("external etcd did not start")
	}

	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.EtcdEndpoints = []string{client.String()} })
	f, err := in.Client().PutFunction(context.Background(), hello("example.test/hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Status.LatestRevision != "hello-00001" {
		t.Errorf("revision %q", f.Status.LatestRevision)
	}
	// The write is in the external etcd.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/surge/v1/functions/"+api.DefaultNamespace+"/hello")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("function not in the external etcd: %v %v", resp, err)
	}
}

// TestServerOnExternalEtcdWithTLS: an external etcd that wants client
// certificates is reached with --etcd-cafile, --etcd-certfile and
// --etcd-keyfile; without a certificate the server does not start.
func TestServerOnExternalEtcdWithTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), now)
	if err != nil {
		t.Fatal(err)
	}
	for _, leaf := range []struct {
		base string
		l    pki.Leaf
	}{
		{"server", pki.Leaf{CommonName: "etcd", Server: true, Client: true, Hosts: []string{"127.0.0.1"}}},
		{"client", pki.Leaf{CommonName: "surge", Client: true}},
	} {
		if _, err := ca.LoadOrIssue(filepath.Join(dir, leaf.base), leaf.l, now); err != nil {
			t.Fatal(err)
		}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	client := url.URL{Scheme: "https", Host: controlplanetest.FreePort(t)}
	peer := url.URL{Scheme: "http", Host: controlplanetest.FreePort(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		TrustedCAFile: filepath.Join(dir, "ca", "ca.crt"), ClientCertAuth: true}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("external etcd did not start")
	}

	tlsFlags := func(c *controlplane.Config) {
		c.EtcdEndpoints = []string{client.String()}
		c.EtcdCAFile = filepath.Join(dir, "ca", "ca.crt")
		c.EtcdCertFile, c.EtcdKeyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	}
	in := controlplanetest.StartWith(t, tlsFlags)
	if _, err := in.Client().PutFunction(context.Background(), hello("example.test/hello:v1")); err != nil {
		t.Fatal(err)
	}

	// No client certificate: etcd refuses the server, which says so.
	scfg := controlplane.DefaultConfig()
	tlsFlags(&scfg)
	scfg.EtcdCertFile, scfg.EtcdKeyFile = "", ""
	scfg.DataDir = filepath.Join(t.TempDir(), "data")
	scfg.APIAddr, scfg.Name, scfg.WriteUserConfig = controlplanetest.FreePort(t), "nocert", false
	srv, err := controlplane.New(scfg, slog.New(slog.DiscardHandler), "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "--etcd-certfile") {
		t.Errorf("a server without a client certificate on an etcd that wants one: %v, want an error naming --etcd-certfile", err)
	}
}
