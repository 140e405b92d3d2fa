package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// joinNode joins and registers a node at 127.0.0.1, as its agent would.
func joinNode(t *testing.T, in *controlplanetest.Instance, name string) *client.Client {
	t.Helper()
	c, _ := in.NodeClient(name, "127.0.0.1")
	n := &api.Node{Metadata: api.ObjectMeta{Name: name}, Status: api.NodeStatus{Address: "127.0.0.1", State: api.NodeAlive,
		Capacity: api.NodeResources{CPU: "2", Memory: "4Gi"}, Allocatable: api.NodeResources{CPU: "2", Memory: "4Gi"}}}
	if err := c.Do(context.Background(), "POST", client.CollectionPath[api.Node](""), n, nil); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	if err := c.Do(context.Background(), "PUT", client.ObjectPath[api.Node](api.Key{Name: name})+"/lease", nil, nil); err != nil {
		t.Fatalf("lease of %s: %v", name, err)
	}
	return c
}

// wantRefused checks that err is the API's 403 whose message names what.
func wantRefused(t *testing.T, attack string, err error, what string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != http.StatusForbidden || !strings.Contains(ae.Message, what) {
		t.Errorf("%s: %v, want a 403 naming %q", attack, err, what)
	}
}

// fakeAgent is a node agent's log endpoint: it serves with cert, asks for
// a client certificate of the cluster CA, and records who called.
type fakeAgent struct {
	srv *httptest.Server
	mu  sync.Mutex
	// seen are the callers' client certificate names and Authorization
	// headers, one per request.
	seen []string
}

func startFakeAgent(t *testing.T, in *controlplanetest.Instance, cert tls.Certificate) *fakeAgent {
	t.Helper()
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM([]byte(in.AdminConfig().CertificateAuthority))
	f := &fakeAgent{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.TLS.PeerCertificates[0].Subject.CommonName+" auth="+r.Header.Get("Authorization"))
		f.mu.Unlock()
		io.WriteString(w, "line 1 of "+r.URL.Path+"\nline 2\n")
	}))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAgent) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// TestNodeIdentity carries out, through the real server, what a node's
// credentials could do before nodes had identities, and checks each is
// refused: a node may change only its own Node, lease and replicas'
// status, at its own addresses; its certificates name it and its address
// and nothing else, come from a CA the API's clients and etcd do not
// trust; and logs go through the API, which alone calls the agents, with
// its own certificate, never a token.
func TestNodeIdentity(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	ctx := context.Background()
	admin := in.Client()
	nodes := map[string]*client.Client{"node-a": joinNode(t, in, "node-a"), "node-b": joinNode(t, in, "node-b")}
	if _, err := admin.PutFunction(ctx, &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "example.test/hello:v1"}}); err != nil {
		t.Fatal(err)
	}
	var rep api.Replica
	waitFor(t, in, "hello's replica bound to a node", func() (bool, string) {
		reps := replicasOf(t, admin, "hello")
		if len(reps) == 1 && reps[0].Spec.NodeName != "" {
			rep = reps[0]
			return true, ""
		}
		return false, "replicas not bound"
	})
	owner, other := rep.Spec.NodeName, "node-a"
	if owner == other {
		other = "node-b"
	}
	own, attacker := nodes[owner], nodes[other]
	repPath := client.ObjectPath[api.Replica](api.KeyOf(&rep))
	n, err := client.Get[api.Node](ctx, admin, api.Key{Name: owner})
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix(n.Spec.PodSubnet)
	inSubnet := subnet.Addr().Next().Next().String()

	// Finding 2: the node role is the node's own.
	for _, a := range []struct {
		name, method, path string
		body               any
	}{
		{"mark another node dead", "PUT", "/v1/nodes/" + owner + "/status", api.Node{Status: api.NodeStatus{Address: "127.0.0.1", State: api.NodeDead}}},
		{"renew another node's lease", "PUT", "/v1/nodes/" + owner + "/lease", nil},
		{"delete another node", "DELETE", "/v1/nodes/" + owner, nil},
		{"create a replica", "POST", "/v1/namespaces/default/replicas", api.Replica{Metadata: api.ObjectMeta{Name: rep.Spec.Revision + "-zzzzz"},
			Spec: api.ReplicaSpec{Function: "hello", Revision: rep.Spec.Revision, NodeName: other}}},
		{"rebind a replica", "PUT", repPath, api.Replica{Spec: api.ReplicaSpec{Function: "hello", Revision: rep.Spec.Revision, NodeName: other}}},
		{"delete a replica", "DELETE", repPath, nil},
		{"mark another node's replica Ready", "PUT", repPath + "/status", api.Replica{Status: api.ReplicaStatus{Phase: api.ReplicaReady, IP: inSubnet, Port: 8080}}},
		{"get another node's certificate", "POST", "/v1/nodes/" + owner + "/certificate", api.CertificateRequest{CSR: "x", Usage: api.UsageServer}},
	} {
		wantRefused(t, a.name, attacker.Do(ctx, a.method, a.path, a.body, nil), "node "+other)
	}
	wantRefused(t, "mark its own replica Ready at a foreign IP",
		own.Do(ctx, "PUT", repPath+"/status", api.Replica{Status: api.ReplicaStatus{Phase: api.ReplicaReady, IP: "203.0.113.7", Port: 443}}, nil), "203.0.113.7")
	if err := own.Do(ctx, "PUT", repPath+"/status", api.Replica{Status: api.ReplicaStatus{Phase: api.ReplicaReady, IP: inSubnet, Port: 8080}}, nil); err != nil {
		t.Errorf("the owner marks its replica Ready in its subnet: %v", err)
	}
	join := in.JoinClient()
	defer closeIdleConnections(join)
	wantRefused(t, "create a replica with the join token", join.Do(ctx, "POST", "/v1/namespaces/default/replicas",
		api.Replica{Metadata: api.ObjectMeta{Name: rep.Spec.Revision + "-yyyyy"}, Spec: api.ReplicaSpec{Function: "hello", Revision: rep.Spec.Revision}}, nil), "bootstrap")

	// Finding 3: certificates name only the node and its checked address,
	// from the node CA, which the API's clients and etcd do not trust.
	for _, a := range []struct{ name, node, address string }{
		// Registered at 127.0.0.1 and alive: not from another address (a
		// loopback one, so that the request's origin passes).
		{"another node", owner, "127.0.0.2"},
		{"an address the request does not come from", "node-c", "198.51.100.4"},
	} {
		_, err := client.Bootstrap(ctx, join, a.node, a.address)
		wantRefused(t, "bootstrap "+a.name, err, a.node)
	}
	if err := attacker.Do(ctx, "POST", "/v1/nodes/"+other+"/certificate", api.CertificateRequest{CSR: csrFor(t, "localhost"), Usage: api.UsageServer}, nil); err == nil {
		t.Error("a node got a serving certificate for localhost")
	} else {
		wantRefused(t, "a serving certificate for localhost", err, "localhost")
	}
	serving, err := client.RequestCertificate(ctx, attacker, other, api.UsageServer)
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(in.Config.DataDir, "pki")
	// Worse than any certificate the API issues: one the node CA signed to
	// look like the API's (its name, localhost). Neither is the API to a
	// client, nor a client to etcd.
	lookalike := apiLookalike(t, pkiDir)
	_, nodeCert := in.NodeClient(other, "127.0.0.1")
	for _, tc := range []struct {
		name            string
		serve, asClient tls.Certificate
	}{{"a node's serving certificate", serving, nodeCert}, {"the node CA's API look-alike", lookalike, lookalike}} {
		impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		impostor.TLS = &tls.Config{Certificates: []tls.Certificate{tc.serve}}
		impostor.StartTLS()
		cfg := in.AdminConfig()
		cfg.Server = impostor.URL // 127.0.0.1: the very address the node's certificate holds
		victim, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var x509Err x509.UnknownAuthorityError
		if _, err := client.List[api.Function](ctx, victim, "", nil); err == nil || !strings.Contains(err.Error(), x509Err.Error()) {
			t.Errorf("the CLI trusted %s as the API: %v", tc.name, err)
		}
		closeIdleConnections(victim)
		impostor.Close()
		// A bound on a refusal that etcd's client retries until it ends.
		refusedCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := etcdClient(t, in, tc.asClient).Get(refusedCtx, "/surge/v1/", clientv3.WithCountOnly()); err == nil {
			t.Errorf("etcd took %s as a client", tc.name)
		}
		cancel()
	}
	etcdCert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "etcd.crt"), filepath.Join(pkiDir, "etcd.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcdClient(t, in, etcdCert).Get(ctx, "/surge/v1/", clientv3.WithCountOnly()); err != nil {
		t.Errorf("etcd refused its own certificate (the control of the test above): %v", err)
	}

	// Finding 1: logs go through the API, which calls the agent with its
	// own certificate, and only an agent with the node's own certificate.
	ownServing, err := client.RequestCertificate(ctx, own, owner, api.UsageServer)
	if err != nil {
		t.Fatal(err)
	}
	agent := startFakeAgent(t, in, ownServing)
	setAgentURL := func(c *client.Client, url string) error {
		return c.Do(ctx, "PUT", "/v1/nodes/"+owner+"/status", api.Node{Status: api.NodeStatus{Address: "127.0.0.1", State: api.NodeAlive, AgentURL: url}}, nil)
	}
	if err := setAgentURL(own, agent.srv.URL); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "point another node's agent URL at itself", setAgentURL(attacker, agent.srv.URL), "node "+other)
	viewer := createViewer(t, in)
	for _, reader := range []*client.Client{admin, viewer} {
		body, err := reader.Open(ctx, repPath+"/log")
		if err != nil {
			t.Fatalf("read the log through the API: %v", err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		if want := "line 1 of " + repPath + "/log\nline 2\n"; string(b) != want {
			t.Errorf("log through the API: %q, want %q", b, want)
		}
	}
	for _, call := range agent.calls() {
		if call != api.APIServerClientName+" auth=" {
			t.Errorf("the agent was called by %q: want the API server's certificate and no token", call)
		}
	}
	for name, c := range map[string]*client.Client{"a node": attacker, "the join token": join} {
		_, err := c.Open(ctx, repPath+"/log")
		wantRefused(t, name+" reads logs", err, "logs")
	}
	// An agent with another node's certificate, at the owner's address,
	// gets no request: the API takes it for no one but the owner.
	impostorAgent := startFakeAgent(t, in, serving)
	if err := setAgentURL(admin, impostorAgent.srv.URL); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Open(ctx, repPath+"/log"); err == nil || !strings.Contains(err.Error(), "not \"surge:node:"+owner+"\"") {
		t.Errorf("log from an agent with another node's certificate: %v, want it refused", err)
	}
	if calls := impostorAgent.calls(); len(calls) > 0 {
		t.Errorf("the impostor agent was called: %v", calls)
	}
}

// apiLookalike is a certificate the node CA (its key, from the data dir)
// signs for the API's name, localhost and 127.0.0.1, server and client.
func apiLookalike(t *testing.T, pkiDir string) tls.Certificate {
	t.Helper()
	nca, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "node-ca.crt"), filepath.Join(pkiDir, "node-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "surge-apiserver"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, nca.Leaf, &key.PublicKey, nca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// etcdClient is a client of the server's embedded etcd presenting cert.
func etcdClient(t *testing.T, in *controlplanetest.Instance, cert tls.Certificate) *clientv3.Client {
	t.Helper()
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM([]byte(in.AdminConfig().CertificateAuthority))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + in.Config.EtcdClientAddr},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: cas}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func createViewer(t *testing.T, in *controlplanetest.Instance) *client.Client {
	t.Helper()
	c := newRawClient(t, in)
	v := in.ClientWithToken(createToken(t, c, in.AdminConfig().Token, "viewer"))
	t.Cleanup(func() { closeIdleConnections(v) })
	return v
}

// closeIdleConnections lets a client's idle connections go.
func closeIdleConnections(c *client.Client) {
	if t, ok := c.Transport().(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// csrFor is a PEM certificate request for a new key, naming dns.
func csrFor(t *testing.T, dns string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{dns}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
