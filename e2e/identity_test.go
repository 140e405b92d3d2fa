//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TestLogsAndNodeIdentity (Security II, findings 1-3) against surge up:
// surge logs reads a replica's log through the API; the agent's endpoint
// answers no caller with a token; the join token and the node's own
// certificate are refused what is not theirs; and a restarted surge up's
// agent takes up its kept certificate instead of joining again.
func TestLogsAndNodeIdentity(t *testing.T) {
	requireRuntime(t)
	c := newClusterOn(t, "up", "surge-sec4", "10.251.0.0/16")
	c.start()
	deployFunction(t, c, "hello", "../examples/hello")
	logsSay := func(want string) {
		t.Helper()
		var out, errOut string
		waitUntil(t, "surge logs to print "+want, time.Minute, func() bool {
			out, errOut, _ = c.surge("logs", "hello")
			return strings.Contains(out, want)
		})
		if errOut != "" {
			t.Errorf("surge logs wrote to stderr: %s", errOut)
		}
	}
	logsSay("hello: listening on :8080")

	ctx := context.Background()
	admin := c.client()
	node, err := client.Get[api.Node](ctx, admin, api.Key{Name: hostNode(t)})
	if err != nil {
		t.Fatal(err)
	}
	reps, err := client.List[api.Replica](ctx, admin, "default", nil)
	if err != nil || len(reps.Items) != 1 {
		t.Fatalf("replicas: %v, %v", reps, err)
	}
	rep := reps.Items[0]
	logPath := client.ObjectPath[api.Replica](api.KeyOf(&rep)) + "/log"

	// The agent's endpoint, called with the admin token: no handshake
	// without the API server's certificate.
	cfg, err := client.LoadConfig(c.config)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the agent is not what is checked
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", node.Status.AgentURL+logPath, nil)
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("the agent answered a caller with the admin token: %s", resp.Status)
	}

	// The join token only bootstraps.
	join, err := os.ReadFile(filepath.Join(c.dataDir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	joinCfg := *cfg
	joinCfg.Token = strings.TrimSpace(string(join))
	joinClient, err := client.New(&joinCfg)
	if err != nil {
		t.Fatal(err)
	}
	forged := api.Replica{Metadata: api.ObjectMeta{Name: rep.Spec.Revision + "-zzzzz"}, Spec: api.ReplicaSpec{Function: "hello", Revision: rep.Spec.Revision, NodeName: node.Metadata.Name}}
	refused(t, "the join token creates a replica", joinClient.Do(ctx, "POST", "/v1/namespaces/default/replicas", forged, nil))
	_, err = joinClient.Open(ctx, logPath)
	refused(t, "the join token reads logs", err)

	// The node's certificate, as its agent keeps it, is the node's only.
	idDir := filepath.Join(c.dataDir, "agent", "identity")
	certPEM, err := os.ReadFile(filepath.Join(idDir, "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(idDir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := client.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	asNode, err := client.NewWithCertificate(cfg, func() *tls.Certificate { return &cert })
	if err != nil {
		t.Fatal(err)
	}
	defer asNode.CloseConnections()
	refused(t, "the node creates a replica", asNode.Do(ctx, "POST", "/v1/namespaces/default/replicas", forged, nil))
	refused(t, "the node marks its replica Ready at a foreign IP", asNode.Do(ctx, "PUT", client.ObjectPath[api.Replica](api.KeyOf(&rep))+"/status",
		api.Replica{Status: api.ReplicaStatus{Phase: api.ReplicaReady, IP: "203.0.113.7", Port: 443}}, nil))
	_, err = asNode.Open(ctx, logPath)
	refused(t, "the node reads logs", err)
	if cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) > 25*time.Hour || len(cert.Leaf.DNSNames) != 0 {
		t.Errorf("the node's certificate: valid %s, DNS names %v; want a day's, for its address only",
			cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore), cert.Leaf.DNSNames)
	}

	// Restarted, the agent takes up its kept certificate.
	if out := c.out.String(); !strings.Contains(out, "joined the cluster") {
		t.Errorf("the agent did not say it joined with the join token:\n%s", out)
	}
	c.stop(syscall.SIGTERM)
	c.start()
	logsSay("hello: listening on :8080")
	after, err := os.ReadFile(filepath.Join(idDir, "node.crt"))
	if err != nil || !bytes.Equal(after, certPEM) {
		t.Errorf("the restarted agent did not keep its certificate (%v)", err)
	}
	if out := c.out.String(); strings.Contains(out, "joined the cluster") {
		t.Errorf("the restarted agent joined again with the join token:\n%s", out)
	}
}

// refused checks that err is the API's 403.
func refused(t *testing.T, what string, err error) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != http.StatusForbidden {
		t.Errorf("%s: %v, want 403", what, err)
	}
}
