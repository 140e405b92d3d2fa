package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// joining configures a server that joins first's cluster, as
// `surge server --join-server URL --token … --ca-file …` does.
func joining(t *testing.T, first *controlplanetest.Instance, name string) func(*controlplane.Config) {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(first.Config.DataDir, controlplane.ServerTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return func(c *controlplane.Config) {
		c.Name = name
		c.JoinServer = first.URL()
		c.JoinServerToken = strings.TrimSpace(string(token))
		c.JoinServerCA = []byte(first.AdminConfig().CertificateAuthority)
	}
}

// status reads GET /v1/cluster.
func status(t *testing.T, c *client.Client) *api.ClusterStatus {
	t.Helper()
	var st api.ClusterStatus
	if err := c.Do(context.Background(), "GET", "/v1/cluster", nil, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// waitStatus polls GET /v1/cluster until cond holds. A bound on a hang,
// not a measurement.
func waitStatus(t *testing.T, c *client.Client, what string, cond func(*api.ClusterStatus) bool) *api.ClusterStatus {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var st api.ClusterStatus
		err := c.Do(context.Background(), "GET", "/v1/cluster", nil, &st)
		if err == nil && cond(&st) {
			return &st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %+v %v", waitTimeout, what, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// registryOpts are go-containerregistry's options to push to or pull from
// a server's registry with the admin token.
func registryOpts(t *testing.T, in *controlplanetest.Instance) []remote.Option {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(in.AdminConfig().CertificateAuthority))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return []remote.Option{remote.WithAuth(&authn.Bearer{Token: in.AdminConfig().Token}), remote.WithTransport(tr)}
}

// pullAll reads an image and every one of its layers through a server.
func pullAll(t *testing.T, in *controlplanetest.Instance, ref string) (v1.Hash, error) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, registryOpts(t, in)...)
	if err != nil {
		return v1.Hash{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return v1.Hash{}, err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return v1.Hash{}, err
		}
	}
	return img.Digest()
}

// hasLocally reports whether a server's own registry holds a manifest,
// without it asking the others (the header servers send each other).
func hasLocally(t *testing.T, in *controlplanetest.Instance, repo string, d v1.Hash) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, in.URL()+"/v2/"+repo+"/manifests/"+d.String(), nil)
	req.Header.Set("Authorization", "Bearer "+in.AdminConfig().Token)
	req.Header.Set("Surge-Replica", "1")
	resp, err := in.Client().Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestThreeServers: two servers join the first; the three share one etcd
// (a write through one is read through another), one CA and the tokens,
// one leader; an image pushed through one is on a second before the push
// returns, and is pulled through every server once its server has
// stopped; a stopped server comes back from its data dir.
func TestThreeServers(t *testing.T) {
	s1 := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Name = "s1" })
	s2 := controlplanetest.StartWith(t, joining(t, s1, "s2"))
	s3 := controlplanetest.StartWith(t, joining(t, s1, "s3"))
	ctx := context.Background()

	st := waitStatus(t, s3.Client(), "three servers, three voting members, a leader", func(st *api.ClusterStatus) bool {
		voters := 0
		for _, m := range st.Members {
			if !m.Learner {
				voters++
			}
		}
		return len(st.Servers) == 3 && voters == 3 && st.Leader != "" && st.EtcdLeader != ""
	})
	for _, si := range st.Servers {
		if si.APIVersion != api.Version || si.MemberID == "" || si.APIURL == "" {
			t.Errorf("server %+v: want its API version, member and URL", si)
		}
	}
	for _, f := range []string{"pki/ca.crt", "pki/ca.key", "pki/gossip.key", controlplane.JoinTokenFile, controlplane.GatewayTokenFile, controlplane.ServerTokenFile} {
		a, _ := os.ReadFile(filepath.Join(s1.Config.DataDir, f))
		for _, in := range []*controlplanetest.Instance{s2, s3} {
			if b, err := os.ReadFile(filepath.Join(in.Config.DataDir, f)); err != nil || string(a) != string(b) {
				t.Errorf("%s of %s differs from the first server's (%v)", f, in.Config.Name, err)
			}
		}
	}
	if s2.AdminConfig().Token != s1.AdminConfig().Token || s2.AdminConfig().Server != s2.URL() {
		t.Errorf("s2's admin config %+v: want the cluster's token and its own URL", s2.AdminConfig())
	}

	if _, err := s2.Client().PutFunction(ctx, hello("example.test/hello:v1")); err != nil {
		t.Fatal(err)
	}
	if f, err := client.Get[api.Function](ctx, s3.Client(), api.Key{Namespace: api.DefaultNamespace, Name: "hello"}); err != nil || f.Status.LatestRevision != "hello-00001" {
		t.Errorf("s3 reads %+v, %v; want the function written through s2", f, err)
	}

	// Push through s1: the push returns once a second server has it.
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(s1.URL(), "https://") + "/default/app:v1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img, registryOpts(t, s1)...); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if !hasLocally(t, s2, "default/app", d) && !hasLocally(t, s3, "default/app", d) {
		t.Error("after the push, neither s2 nor s3 holds the image")
	}

	// s1 stops; s2 and s3 serve the image by tag and by digest, and keep it.
	s1.Stop()
	waitStatus(t, s2.Client(), "a leader among s2 and s3", func(st *api.ClusterStatus) bool { return st.Leader == "s2" || st.Leader == "s3" })
	for _, in := range []*controlplanetest.Instance{s2, s3} {
		host := strings.TrimPrefix(in.URL(), "https://")
		for _, ref := range []string{host + "/default/app:v1", host + "/default/app@" + d.String()} {
			got, err := pullAll(t, in, ref)
			if err != nil || got != d {
				t.Errorf("pull %s through %s with s1 stopped: %s, %v; want %s", ref, in.Config.Name, got, err, d)
			}
		}
		if !hasLocally(t, in, "default/app", d) {
			t.Errorf("%s did not keep the image it fetched", in.Config.Name)
		}
	}
	// A tag moved through s2 is what s3 serves.
	img2, _ := random.Image(1024, 1)
	r2, _ := name.ParseReference(strings.TrimPrefix(s2.URL(), "https://") + "/default/app:v1")
	if err := remote.Write(r2, img2, registryOpts(t, s2)...); err != nil {
		t.Fatal(err)
	}
	d2, _ := img2.Digest()
	if got, err := pullAll(t, s3, strings.TrimPrefix(s3.URL(), "https://")+"/default/app:v1"); err != nil || got != d2 {
		t.Errorf("s3 serves app:v1 as %s (%v), want the tag as moved through s2, %s", got, err, d2)
	}

	// s1 comes back from its data dir, as a member again.
	s1.Restart()
	waitStatus(t, s1.Client(), "s1 listed again", func(st *api.ClusterStatus) bool { return len(st.Servers) == 3 })
	if f, err := client.Get[api.Function](ctx, s1.Client(), api.Key{Namespace: api.DefaultNamespace, Name: "hello"}); err != nil || f.Status.LatestRevision != "hello-00001" {
		t.Errorf("s1 after its restart reads %+v, %v", f, err)
	}
}

// TestJoinRefusals: a wrong token is refused at once, naming the flag, and
// so is a server of another API version or a name already taken.
func TestJoinRefusals(t *testing.T) {
	s1 := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Name = "s1" })
	cfg := controlplane.DefaultConfig()
	joining(t, s1, "s2")(&cfg)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.APIAddr, cfg.EtcdClientAddr, cfg.EtcdPeerAddr = controlplanetest.FreePort(t), controlplanetest.FreePort(t), controlplanetest.FreePort(t)
	cfg.WriteUserConfig = false
	cfg.JoinServerToken = "wrong.token"
	srv, err := controlplane.New(cfg, slog.New(slog.DiscardHandler), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("Run with a wrong token = %v, want an error naming --token", err)
	}

	c := s1.Client()
	for _, tc := range []struct {
		req  api.JoinRequest
		code int
	}{
		{api.JoinRequest{Name: "s2", PeerURL: "https://127.0.0.1:1", APIVersion: "v2"}, http.StatusConflict},
		{api.JoinRequest{Name: "s1", PeerURL: "https://127.0.0.1:1", APIVersion: api.Version}, http.StatusConflict},
		{api.JoinRequest{Name: "bad name", PeerURL: "https://127.0.0.1:1", APIVersion: api.Version}, http.StatusBadRequest},
		{api.JoinRequest{Name: "s2", PeerURL: "http://127.0.0.1:1", APIVersion: api.Version}, http.StatusBadRequest},
	} {
		var ae *api.Error
		err := c.Do(context.Background(), "POST", "/v1/cluster/members", tc.req, nil)
		if !errors.As(err, &ae) || ae.Code != tc.code {
			t.Errorf("join %+v: %v, want %d", tc.req, err, tc.code)
		}
	}
	// Only an admin joins: the files carry the CA's key.
	viewer := createToken(t, newRawClient(t, s1), s1.AdminConfig().Token, "viewer")
	err = s1.ClientWithToken(viewer).Do(context.Background(), "POST", "/v1/cluster/members", api.JoinRequest{Name: "x", APIVersion: api.Version}, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != http.StatusForbidden {
		t.Errorf("a viewer joins: %v, want 403", err)
	}
}

// TestSnapshotRestore: a snapshot restored into a fresh server's data dir
// serves the old functions and images with the old tokens, and a watch
// from before the snapshot is told to list anew.
func TestSnapshotRestore(t *testing.T) {
	old := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Name = "old" })
	ctx := context.Background()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(strings.TrimPrefix(old.URL(), "https://") + "/default/app:v1")
	if err := remote.Write(r, img, registryOpts(t, old)...); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if _, err := old.Client().PutFunction(ctx, hello(r.Context().Digest(d.String()).String())); err != nil {
		t.Fatal(err)
	}
	list, err := client.List[api.Function](ctx, old.Client(), api.DefaultNamespace, nil)
	if err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "snap.tar")
	req, _ := http.NewRequest(http.MethodPost, old.URL()+"/v1/cluster/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+old.AdminConfig().Token)
	resp, err := old.Client().Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, resp.Body)
	resp.Body.Close()
	f.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get(controlplane.SnapshotMissingHeader) != "" {
		t.Fatalf("snapshot: %s, %v, missing %q", resp.Status, err, resp.Header.Get(controlplane.SnapshotMissingHeader))
	}
	adminToken := old.AdminConfig().Token
	old.Stop()

	cfg := controlplane.DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Name = "new"
	cfg.APIAddr, cfg.EtcdClientAddr, cfg.EtcdPeerAddr = controlplanetest.FreePort(t), controlplanetest.FreePort(t), controlplanetest.FreePort(t)
	if err := controlplane.RestoreSnapshot(ctx, cfg, file); err != nil {
		t.Fatal(err)
	}
	if err := controlplane.RestoreSnapshot(ctx, cfg, file); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("restore into a data dir with etcd's data: %v, want an error naming --data-dir", err)
	}
	restored := controlplanetest.StartWith(t, func(c *controlplane.Config) {
		c.DataDir, c.Name, c.APIAddr, c.EtcdClientAddr, c.EtcdPeerAddr = cfg.DataDir, cfg.Name, cfg.APIAddr, cfg.EtcdClientAddr, cfg.EtcdPeerAddr
	})
	if restored.AdminConfig().Token != adminToken {
		t.Error("the restored server has another admin token")
	}
	c := restored.Client()
	f2, err := client.Get[api.Function](ctx, c, api.Key{Namespace: api.DefaultNamespace, Name: "hello"})
	if err != nil || f2.Status.LatestRevision != "hello-00001" {
		t.Fatalf("restored function: %+v, %v", f2, err)
	}
	host := strings.TrimPrefix(restored.URL(), "https://")
	for _, ref := range []string{host + "/default/app@" + d.String(), host + "/default/app:v1"} {
		if got, err := pullAll(t, restored, ref); err != nil || got != d {
			t.Errorf("pull %s from the restored server: %s, %v", ref, got, err)
		}
	}
	err = client.Watch[api.Function](ctx, c, api.DefaultNamespace, client.WatchOptions{ResourceVersion: list.ResourceVersion},
		func(api.WatchEvent[*api.Function]) error { return nil })
	if !errors.Is(err, api.ErrGone) {
		t.Errorf("a watch from before the snapshot: %v, want 410 Gone", err)
	}
}

func TestClusterConfigValidate(t *testing.T) {
	cfg := controlplane.DefaultConfig()
	cfg.JoinServer = "http://10.0.0.1:7070"
	cfg.EtcdCertFile = "/etc/etcd/client.crt"
	cfg.EtcdPeerAddr = "0.0.0.0:7072"
	err := cfg.Validate()
	for _, want := range []string{"--join-server", "--token", "--ca-file", "--etcd-certfile", "--etcd-keyfile", "--etcd-peer-addr"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want an error naming %s", err, want)
		}
	}
}
