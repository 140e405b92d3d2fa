package controlplane_test

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
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
