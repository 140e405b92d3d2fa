package apiserver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/pki"
)

// csr makes a key and a PEM certificate request of tmpl for it.
func csr(t *testing.T, tmpl x509.CertificateRequest) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key
}

// body encodes v as JSON.
func body(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// certOf reads a certificate answer into a key pair with key.
func certOf(t *testing.T, a answer, key *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	if a.code != http.StatusOK {
		t.Fatalf("certificate: %d %s", a.code, a.body)
	}
	var resp api.CertificateResponse
	if err := json.Unmarshal(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

// withCert is the env's HTTP client presenting cert.
func (e *env) withCert(cert tls.Certificate) *http.Client {
	tr := e.http.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// join bootstraps node at address with the join token and returns its
// HTTP client, which authenticates with the node's certificate.
func (e *env) join(joinToken, node, address string) *http.Client {
	e.t.Helper()
	req, key := csr(e.t, x509.CertificateRequest{})
	a := e.do("POST", "/v1/nodes/"+node+"/bootstrap", joinToken, body(e.t, api.BootstrapRequest{CSR: req, Address: address}))
	return e.withCert(certOf(e.t, a, key))
}

// TestNodeRestriction: the join token buys a node its certificate and
// nothing else; with the certificate a node changes only its own Node,
// lease and replicas' status, at addresses the control plane gave it, and
// reads what it needs.
func TestNodeRestriction(t *testing.T) {
	e := newEnv(t)
	e.deploy("hello", "example.test/hello:v1")
	e.deploy("other", "example.test/other:v1")
	joinToken := e.token(auth.RoleNode)
	a := e.join(joinToken, "node-a", "127.0.0.1")
	b := e.join(joinToken, "node-b", "127.0.0.1")
	for _, n := range []struct {
		c    *http.Client
		name string
	}{{a, "node-a"}, {b, "node-b"}} {
		if r := e.doWith(n.c, "POST", "/v1/nodes", "", `{"metadata":{"name":"`+n.name+`"},"status":{"address":"127.0.0.1","agentURL":"https://127.0.0.1:7073"}}`, "application/json"); r.code != http.StatusCreated {
			t.Fatalf("%s registers itself: %d %s", n.name, r.code, r.body)
		}
	}
	var nodeA api.Node
	if err := json.Unmarshal(e.do("GET", "/v1/nodes/node-a", e.admin, "").body, &nodeA); err != nil || nodeA.Spec.PodSubnet == "" {
		t.Fatalf("node-a: %+v %v", nodeA, err)
	}
	subnetIP := strings.TrimSuffix(nodeA.Spec.PodSubnet, "0/24") + "7"
	for _, r := range []struct{ name, node, fn string }{
		{"hello-00001-aaaaa", "node-a", "hello"}, {"hello-00001-bbbbb", "node-b", "hello"}, {"other-00001-ccccc", "node-b", "other"},
	} {
		rev := r.fn + "-00001"
		if x := e.do("POST", "/v1/namespaces/default/replicas", e.admin, `{"metadata":{"name":"`+r.name+`"},"spec":{"function":"`+r.fn+`","revision":"`+rev+`","nodeName":"`+r.node+`"}}`); x.code != http.StatusCreated {
			t.Fatalf("replica %s: %d %s", r.name, x.code, x.body)
		}
	}
	replica := func(name string) string { return "/v1/namespaces/default/replicas/" + name }
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		field                    string
	}{
		// Its own objects.
		{"own status", "PUT", "/v1/nodes/node-a/status", `{"status":{"address":"127.0.0.1","state":"alive","agentURL":"https://127.0.0.1:7074"}}`, 200, ""},
		{"own lease", "PUT", "/v1/nodes/node-a/lease", "", 200, ""},
		{"own replica Ready in its subnet", "PUT", replica("hello-00001-aaaaa") + "/status", `{"status":{"phase":"Ready","ip":"` + subnetIP + `","port":8080}}`, 200, ""},
		{"own revision", "GET", "/v1/namespaces/default/revisions/hello-00001", "", 200, ""},
		{"pull secrets of its replicas' namespace", "GET", "/v1/namespaces/default/pullsecrets", "", 200, ""},
		{"pull secrets of another namespace", "GET", "/v1/namespaces/team/pullsecrets", "", 403, ""},
		{"pull secrets of every namespace", "GET", "/v1/pullsecrets", "", 403, ""},
		{"nodes", "GET", "/v1/nodes", "", 200, ""},
		{"replicas", "GET", "/v1/replicas", "", 200, ""},
		{"who", "GET", "/v1/whoami", "", 200, ""},
		{"the gossip key", "GET", "/v1/gossip/key", "", 200, ""},
		// Another node's.
		{"another node's status", "PUT", "/v1/nodes/node-b/status", `{"status":{"address":"127.0.0.1","state":"dead"}}`, 403, ""},
		{"another node's lease", "PUT", "/v1/nodes/node-b/lease", "", 403, ""},
		{"register another node", "POST", "/v1/nodes", `{"metadata":{"name":"node-c"}}`, 403, ""},
		{"another node's replica Ready", "PUT", replica("hello-00001-bbbbb") + "/status", `{"status":{"phase":"Ready","ip":"` + subnetIP + `","port":8080}}`, 403, ""},
		{"another node's revision", "GET", "/v1/namespaces/default/revisions/other-00001", "", 403, ""},
		{"another node's certificate", "POST", "/v1/nodes/node-b/certificate", `{"csr":"x","usage":"server"}`, 403, ""},
		// What the control plane and the admin do.
		{"create a replica", "POST", "/v1/namespaces/default/replicas", `{"metadata":{"name":"hello-00001-zzzzz"},"spec":{"function":"hello","revision":"hello-00001","nodeName":"node-a"}}`, 403, ""},
		{"rebind a replica", "PUT", replica("hello-00001-bbbbb"), `{"spec":{"function":"hello","revision":"hello-00001","nodeName":"node-a"}}`, 403, ""},
		{"delete a replica", "DELETE", replica("hello-00001-bbbbb"), "", 403, ""},
		{"replace its node (cordon, subnet)", "PUT", "/v1/nodes/node-a", `{"spec":{"podSubnet":"10.244.9.0/24"}}`, 403, ""},
		{"delete a node", "DELETE", "/v1/nodes/node-b", "", 403, ""},
		{"declare itself dead", "PUT", "/v1/nodes/node-a/status", `{"status":{"state":"dead"}}`, 403, "status.state"},
		{"move its address", "PUT", "/v1/nodes/node-a/status", `{"status":{"address":"10.9.9.9"}}`, 403, "status.address"},
		{"agent URL over http", "PUT", "/v1/nodes/node-a/status", `{"status":{"agentURL":"http://127.0.0.1:7073"}}`, 403, "status.agentURL"},
		{"agent URL elsewhere", "PUT", "/v1/nodes/node-a/status", `{"status":{"agentURL":"https://203.0.113.9:443"}}`, 403, "status.agentURL"},
		{"own replica Ready at a foreign IP", "PUT", replica("hello-00001-aaaaa") + "/status", `{"status":{"phase":"Ready","ip":"203.0.113.9","port":443}}`, 403, "status.ip"},
		{"own replica Ready in another node's subnet", "PUT", replica("hello-00001-aaaaa") + "/status", `{"status":{"phase":"Ready","ip":"10.244.1.7","port":8080}}`, 403, "status.ip"},
		{"list revisions", "GET", "/v1/namespaces/default/revisions", "", 403, ""},
		{"read functions", "GET", "/v1/namespaces/default/functions/hello", "", 403, ""},
		{"read tokens", "GET", "/v1/tokens", "", 403, ""},
		{"deploy", "PUT", "/v1/namespaces/default/functions/hello", `{"spec":{"image":"x"}}`, 403, ""},
		{"bootstrap again", "POST", "/v1/nodes/node-a/bootstrap", `{"csr":"x","address":"127.0.0.1"}`, 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.doWith(a, tc.method, tc.path, "", tc.body, "application/json")
			if r.code != tc.code || r.err.Field != tc.field {
				t.Fatalf("%d field %q: %s; want %d field %q", r.code, r.err.Field, r.body, tc.code, tc.field)
			}
			if r.code == http.StatusForbidden && !strings.Contains(r.err.Message, "node node-a") {
				t.Errorf("403 says %q, want it to name the node", r.err.Message)
			}
		})
	}
	if r := e.doWith(a, "GET", "/v1/version", joinToken, "", ""); r.code != http.StatusUnauthorized {
		t.Errorf("a certificate and a token at once: %d, want 401", r.code)
	}
}

// TestNodeCertificates: certificates only for the caller's own node, at
// its checked address, with no other name; and only certificates of the
// node CA, for client authentication, make a node.
func TestNodeCertificates(t *testing.T) {
	e := newEnv(t)
	joinToken := e.token(auth.RoleNode)
	bootstrap := func(node, address string, tmpl x509.CertificateRequest) answer {
		req, _ := csr(t, tmpl)
		return e.do("POST", "/v1/nodes/"+node+"/bootstrap", joinToken, body(t, api.BootstrapRequest{CSR: req, Address: address}))
	}
	for _, tc := range []struct {
		name, node, address string
		tmpl                x509.CertificateRequest
		code                int
		field               string
	}{
		{"an address it does not come from", "node-a", "203.0.113.9", x509.CertificateRequest{}, 403, "address"},
		{"localhost", "node-a", "127.0.0.1", x509.CertificateRequest{DNSNames: []string{"localhost"}}, 403, "csr"},
		{"an arbitrary name", "node-a", "127.0.0.1", x509.CertificateRequest{DNSNames: []string{"api.example.test"}}, 403, "csr"},
		{"another address", "node-a", "127.0.0.1", x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, 403, "csr"},
		{"the API's name", "node-a", "127.0.0.1", x509.CertificateRequest{Subject: pkix.Name{CommonName: "surge-apiserver"}}, 403, "csr"},
		{"a bad node name", "Node_A", "127.0.0.1", x509.CertificateRequest{}, 422, "metadata.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := bootstrap(tc.node, tc.address, tc.tmpl); r.code != tc.code || r.err.Field != tc.field {
				t.Errorf("%d field %q: %s; want %d field %q", r.code, r.err.Field, r.body, tc.code, tc.field)
			}
		})
	}

	// A node's client certificate: its name and address, client only, for
	// a day.
	req, key := csr(t, x509.CertificateRequest{})
	cert := certOf(t, e.do("POST", "/v1/nodes/node-a/bootstrap", joinToken, body(t, api.BootstrapRequest{CSR: req, Address: "127.0.0.1"})), key)
	if l := cert.Leaf; l.Subject.CommonName != "surge:node:node-a" || len(l.DNSNames) != 0 || len(l.IPAddresses) != 1 ||
		!l.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || l.NotAfter.Sub(e.clk.Now()) != pki.NodeCertLifetime ||
		len(l.ExtKeyUsage) != 1 || l.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("node certificate %q for %v %v, usages %v, valid until now+%s", l.Subject.CommonName, l.DNSNames, l.IPAddresses, l.ExtKeyUsage, l.NotAfter.Sub(e.clk.Now()))
	}
	a := e.withCert(cert)
	if r := e.doWith(a, "POST", "/v1/nodes", "", `{"metadata":{"name":"node-a"}}`, "application/json"); r.code != http.StatusCreated {
		t.Fatalf("register: %d %s", r.code, r.body)
	}
	// The join token may not take a live node over from another address
	// (loopback: this machine's, so the request's origin passes).
	if r := bootstrap("node-a", "127.0.0.2", x509.CertificateRequest{}); r.code != http.StatusForbidden || !strings.Contains(r.err.Message, "not dead") {
		t.Errorf("take node-a over from another address: %d %s, want 403", r.code, r.body)
	}
	if r := bootstrap("node-a", "127.0.0.1", x509.CertificateRequest{}); r.code != http.StatusOK {
		t.Errorf("node-a joins again from its address: %d %s", r.code, r.body)
	}
	var serving tls.Certificate
	for _, usage := range []api.CertificateUsage{api.UsageClient, api.UsageServer} {
		req, key := csr(t, x509.CertificateRequest{})
		c := certOf(t, e.doWith(a, "POST", "/v1/nodes/node-a/certificate", "", body(t, api.CertificateRequest{CSR: req, Usage: usage}), "application/json"), key)
		want := map[api.CertificateUsage]x509.ExtKeyUsage{api.UsageClient: x509.ExtKeyUsageClientAuth, api.UsageServer: x509.ExtKeyUsageServerAuth}[usage]
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: e.nodeCA.Pool(), DNSName: "127.0.0.1", CurrentTime: e.clk.Now(), KeyUsages: []x509.ExtKeyUsage{want}}); err != nil {
			t.Errorf("%s certificate: %v", usage, err)
		}
		serving = c
	}
	req, _ = csr(t, x509.CertificateRequest{DNSNames: []string{"localhost"}})
	if r := e.doWith(a, "POST", "/v1/nodes/node-a/certificate", "", body(t, api.CertificateRequest{CSR: req, Usage: api.UsageServer}), "application/json"); r.code != http.StatusForbidden || r.err.Field != "csr" {
		t.Errorf("a serving certificate for localhost: %d %s, want 403 on csr", r.code, r.body)
	}

	// Only a node CA's client certificate, valid now, makes a node.
	other, err := pki.LoadOrCreateNodeCA(t.TempDir(), e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, key = csr(t, x509.CertificateRequest{})
	parsed, err := pki.ParseCSR([]byte(req))
	if err != nil {
		t.Fatal(err)
	}
	forgedPEM, err := other.Sign(parsed, pki.NodeCert{Node: "node-a", Address: netip.MustParseAddr("127.0.0.1"), Usage: api.UsageClient}, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(forgedPEM)
	forged := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{{"another node CA's", forged}, {"a serving certificate", serving}} {
		if r := e.doWith(e.withCert(tc.cert), "GET", "/v1/nodes", "", "", ""); r.code != http.StatusUnauthorized {
			t.Errorf("%s as a client certificate: %d %s, want 401", tc.name, r.code, r.body)
		}
	}
	e.clk.Advance(pki.NodeCertLifetime + time.Minute)
	if r := e.doWith(a, "GET", "/v1/nodes", "", "", ""); r.code != http.StatusUnauthorized || !strings.Contains(r.err.Message, "join token") {
		t.Errorf("an expired certificate: %d %s, want 401 saying to join again", r.code, r.body)
	}
}
