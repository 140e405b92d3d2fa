package nodeagent

import (
	"bytes"
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

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/internal/clock"
)

// identityOptions are an agent's options against in, with the join token,
// a state dir and clk.
func identityOptions(t *testing.T, in *controlplanetest.Instance, stateDir string, clk clock.Clock) Options {
	t.Helper()
	o := DefaultOptions()
	o.Client = *in.AdminConfig()
	o.Client.Token = in.Server().JoinToken()
	o.Agent.NodeName = "node-1"
	o.Containers.StateDir = stateDir
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Clock = clk
	return o.withDefaults()
}

func serial(id *identity) string { return id.cert.get().Leaf.SerialNumber.String() }

// TestIdentityJoinsOnceRenewsAndIsKept: the join token buys the node its
// certificate once; the agent renews it at two thirds of its life (on its
// clock), keeps it in its state dir, and a restarted agent takes it up
// again without the join token.
func TestIdentityJoinsOnceRenewsAndIsKept(t *testing.T) {
	in := controlplanetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stateDir := t.TempDir()
	clk := clock.NewFake()
	o := identityOptions(t, in, stateDir, clk)

	id, err := startIdentity(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer id.close()
	if err := id.check(ctx); err != nil {
		t.Fatalf("the API does not take the new certificate: %v", err)
	}
	leaf := id.cert.get().Leaf
	if leaf.Subject.CommonName != "surge:node:node-1" || leaf.NotAfter.Sub(leaf.NotBefore) < 24*time.Hour {
		t.Errorf("certificate %q valid %s", leaf.Subject.CommonName, leaf.NotAfter.Sub(leaf.NotBefore))
	}
	if fi, err := os.Stat(filepath.Join(stateDir, identityDir, "node.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kept key: %v, %v; want mode 0600", fi, err)
	}

	// Renewal at two thirds of its life.
	rctx, stopRenew := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); id.cert.run(rctx) }()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before := serial(id)
	clk.Advance(RenewAt(leaf).Sub(clk.Now()) - time.Second)
	if serial(id) != before {
		t.Fatal("renewed before two thirds of the certificate's life")
	}
	clk.Advance(time.Second)
	if err := clk.BlockUntilContext(ctx, 1); err != nil { // renewed, waiting for the next time
		t.Fatal(err)
	}
	renewed := serial(id)
	stopRenew()
	<-done
	if renewed == before {
		t.Fatal("not renewed at two thirds of the certificate's life")
	}
	if err := id.check(ctx); err != nil {
		t.Errorf("the API does not take the renewed certificate: %v", err)
	}

	// Restarted, the agent takes up the renewed certificate, even with the
	// join token revoked.
	admin := in.Client()
	defer closeIdleConnections(admin)
	joinID, _, _ := strings.Cut(in.Server().JoinToken(), ".")
	if err := admin.Do(ctx, "DELETE", "/v1/tokens/"+joinID, nil, nil); err != nil {
		t.Fatal(err)
	}
	again, err := startIdentity(ctx, o)
	if err != nil {
		t.Fatalf("restart with the kept certificate and no join token: %v", err)
	}
	defer again.close()
	if got := serial(again); got != renewed {
		t.Errorf("restarted with certificate %s, want the kept %s", got, renewed)
	}
	// Once it has expired (the agent was down for more than a day), the
	// agent needs the join token again; here it is revoked, so it says so.
	clk.Advance(25 * time.Hour)
	if _, err := startIdentity(ctx, o); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("restart with an expired certificate and a revoked join token: %v, want 401", err)
	}
}

// TestIdentityJoinsAgainWhenTheAPIRefusesIt: a kept certificate of
// another cluster (another node CA) is answered 401; the agent joins again
// with the join token.
func TestIdentityJoinsAgainWhenTheAPIRefusesIt(t *testing.T) {
	stateDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := controlplanetest.Start(t)
	id, err := startIdentity(ctx, identityOptions(t, first, stateDir, nil))
	if err != nil {
		t.Fatal(err)
	}
	id.close()
	old := serial(id)
	first.Stop()

	second := controlplanetest.Start(t)
	again, err := startIdentity(ctx, identityOptions(t, second, stateDir, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if serial(again) == old {
		t.Error("kept the certificate another cluster issued")
	}
	if err := again.check(ctx); err != nil {
		t.Errorf("the new certificate: %v", err)
	}
}

// logRuntime is a fake runtime whose replicas' logs are one line.
type logRuntime struct{ *fakeRuntime }

func (logRuntime) OpenLogs(_ context.Context, id string, _ bool) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("log of " + id + "\n")), nil
}

// TestLogsGoThroughTheAPI: a user reads a replica's log from the API,
// which fetches it from the agent with its own client certificate. The
// agent's endpoint answers nothing else: not a caller with a token, not a
// node's certificate.
func TestLogsGoThroughTheAPI(t *testing.T) {
	in := controlplanetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := in.Client()
	defer closeIdleConnections(admin)
	f := logRuntime{newFakeRuntime(t)}
	nodeAPI, nodeCert := in.NodeClient("node-1", "127.0.0.1")
	cfg := DefaultConfig()
	cfg.NodeName, cfg.MilliCPU, cfg.MemoryBytes = "node-1", 2000, 4<<30
	cfg.LogAddr = "127.0.0.1:0"
	cfg.apiCA = []byte(in.AdminConfig().CertificateAuthority)
	a, err := New(cfg, nodeAPI, func(context.Context, *api.Node) (Runtime, error) { return f, nil }, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	if _, err := admin.PutFunction(ctx, &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}); err != nil {
		t.Fatal(err)
	}
	var rep api.Replica
	waitFor(t, "a Ready replica", func() (bool, string) {
		reps := replicas(t, admin)
		if len(reps) == 1 && reps[0].Status.Phase == api.ReplicaReady {
			rep = reps[0]
			return true, ""
		}
		return false, "not Ready"
	})
	logPath := client.ObjectPath[api.Replica](api.KeyOf(&rep)) + "/log"
	body, err := admin.Open(ctx, logPath)
	if err != nil {
		t.Fatalf("log through the API: %v", err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if want := "log of " + rep.Metadata.Name + "\n"; string(b) != want {
		t.Errorf("log through the API: %q, want %q", b, want)
	}

	// The agent's endpoint, called directly.
	n, err := client.Get[api.Node](ctx, admin, api.Key{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.Status.AgentURL, "https://127.0.0.1:") {
		t.Fatalf("agent URL %q", n.Status.AgentURL)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(in.AdminConfig().CertificateAuthority))
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{{"with the admin token and no certificate", nil}, {"with a node's certificate", []tls.Certificate{nodeCert}}} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: tc.certs}} // the caller is what is tested
		req, _ := http.NewRequestWithContext(ctx, "GET", n.Status.AgentURL+logPath, nil)
		req.Header.Set("Authorization", "Bearer "+in.AdminConfig().Token)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			var out bytes.Buffer
			_, _ = io.Copy(&out, resp.Body)
			resp.Body.Close()
			t.Errorf("the agent answered a caller %s: %s %q", tc.name, resp.Status, out.String())
		}
		tr.CloseIdleConnections()
	}
}
