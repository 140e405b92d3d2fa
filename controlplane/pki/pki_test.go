package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = clock.Epoch

func newCA(t *testing.T) (*pki.CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCACreatedOnceThenLoaded(t *testing.T) {
	ca, dir := newCA(t)
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "surge-ca" {
		t.Errorf("CA certificate %+v: want a CA named surge-ca", ca.Cert.Subject)
	}
	if !ca.Cert.NotBefore.Before(now) || !ca.Cert.NotAfter.After(now.Add(9*365*24*time.Hour)) {
		t.Errorf("CA valid %v to %v: want from before now for about ten years", ca.Cert.NotBefore, ca.Cert.NotAfter)
	}
	if m := mode(t, filepath.Join(dir, "ca.key")); m != 0o600 {
		t.Errorf("ca.key has mode %o, want 0600", m)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("the pki dir has mode %o, want 0700", m)
	}

	again, err := pki.LoadOrCreateCA(dir, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) || string(again.CertPEM) != string(ca.CertPEM) {
		t.Error("a second start made a new CA instead of loading the first")
	}
}

func TestCALoadFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(dir string) error
	}{
		{"key missing", func(dir string) error { return os.Remove(filepath.Join(dir, "ca.key")) }},
		{"key corrupt", func(dir string) error { return os.WriteFile(filepath.Join(dir, "ca.key"), []byte("junk"), 0o600) }},
		{"key of another CA", func(dir string) error {
			other, err := os.ReadFile(filepath.Join(dir, "other", "ca.key"))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "ca.key"), other, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := newCA(t)
			if _, err := pki.LoadOrCreateCA(filepath.Join(dir, "other"), now); err != nil {
				t.Fatal(err)
			}
			if err := tc.break_(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := pki.LoadOrCreateCA(dir, now); err == nil {
				t.Error("loaded a broken CA")
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca, _ := newCA(t)
	certPEM, key, err := ca.Issue(pki.Leaf{CommonName: "surge-etcd-a", Hosts: []string{"localhost", "10.0.0.1"}, Server: true, Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := parse(t, certPEM)
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate is not for the key returned")
	}
	if cert.Subject.CommonName != "surge-etcd-a" {
		t.Errorf("common name %q", cert.Subject.CommonName)
	}
	if !slices.Equal(cert.DNSNames, []string{"localhost"}) || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("names %v %v: want localhost and 10.0.0.1", cert.DNSNames, cert.IPAddresses)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("key usages %v: want server and client", cert.ExtKeyUsage)
	}
	verify(t, ca, cert, "10.0.0.1", now)
	// A year's certificate: valid in eleven months, expired in thirteen.
	verify(t, ca, cert, "localhost", now.Add(11*30*24*time.Hour))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now.Add(13 * 30 * 24 * time.Hour), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("the certificate is still valid after thirteen months")
	}
}

func TestLoadOrIssue(t *testing.T) {
	ca, dir := newCA(t)
	leaf := pki.Leaf{CommonName: "surge-apiserver", Hosts: []string{"localhost", "127.0.0.1"}, Server: true}
	base := filepath.Join(dir, "apiserver")
	first, err := ca.LoadOrIssue(base, leaf, now)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, base+".key"); m != 0o600 {
		t.Errorf("key mode %o, want 0600", m)
	}
	firstCert, err := os.ReadFile(base + ".crt")
	if err != nil {
		t.Fatal(err)
	}
	firstKey, err := os.ReadFile(base + ".key")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newCA(t)
	for _, tc := range []struct {
		name    string
		ca      *pki.CA
		leaf    pki.Leaf
		at      time.Time
		renewed bool
	}{
		{"still good", ca, leaf, now.Add(30 * 24 * time.Hour), false},
		{"fewer hosts asked", ca, pki.Leaf{CommonName: leaf.CommonName, Hosts: []string{"localhost"}, Server: true}, now, false},
		{"a host more", ca, pki.Leaf{CommonName: leaf.CommonName, Hosts: append(slices.Clone(leaf.Hosts), "api.example.test"), Server: true}, now, true},
		{"an address more", ca, pki.Leaf{CommonName: leaf.CommonName, Hosts: append(slices.Clone(leaf.Hosts), "10.0.0.9"), Server: true}, now, true},
		{"less than a third of its life left", ca, leaf, now.Add(250 * 24 * time.Hour), true},
		{"signed by another CA", other, leaf, now, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from the first certificate and its key.
			if err := pki.WriteFileAtomic(base+".crt", firstCert, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := pki.WriteFileAtomic(base+".key", firstKey, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := tc.ca.LoadOrIssue(base, tc.leaf, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			renewed := string(got.Certificate[0]) != string(first.Certificate[0])
			if renewed != tc.renewed {
				t.Errorf("renewed %v, want %v", renewed, tc.renewed)
			}
			if renewed {
				verify(t, tc.ca, got.Leaf, tc.leaf.Hosts[len(tc.leaf.Hosts)-1], tc.at)
			}
		})
	}
}

func csrFor(t *testing.T, tmpl *x509.CertificateRequest) (*x509.CertificateRequest, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key, der
}

// TestNodeCA: the node CA is a CA of its own, apart from the cluster CA;
// it signs a node's key for the node's address and one usage, for a day,
// and what it signs verifies against it alone.
func TestNodeCA(t *testing.T) {
	ca, dir := newCA(t)
	nca, err := pki.LoadOrCreateNodeCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := pki.LoadOrCreateNodeCA(dir, now.Add(time.Hour)); err != nil || !again.Certificate().Equal(nca.Certificate()) {
		t.Fatalf("node CA loaded again: %v, same %v", err, err == nil && again.Certificate().Equal(nca.Certificate()))
	}
	if nca.Certificate().Equal(ca.Cert) || nca.Certificate().PublicKey.(*ecdsa.PublicKey).Equal(ca.Cert.PublicKey) {
		t.Fatal("the node CA is the cluster CA, or shares its key")
	}
	if m := mode(t, filepath.Join(dir, "node-ca.key")); m != 0o600 {
		t.Errorf("node CA key mode %o, want 0600", m)
	}
	addr := netip.MustParseAddr("10.0.0.5")
	csr, key, _ := csrFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-a"}})
	for _, usage := range []api.CertificateUsage{api.UsageClient, api.UsageServer} {
		certPEM, err := nca.Sign(csr, pki.NodeCert{Node: "node-a", Address: addr, Usage: usage}, now)
		if err != nil {
			t.Fatal(err)
		}
		cert := parse(t, certPEM)
		if !key.PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != "surge:node:node-a" || len(cert.DNSNames) != 0 {
			t.Errorf("%s certificate %q, DNS names %v: want the request's key, named surge:node:node-a, no DNS name", usage, cert.Subject.CommonName, cert.DNSNames)
		}
		want := map[api.CertificateUsage]x509.ExtKeyUsage{api.UsageClient: x509.ExtKeyUsageClientAuth, api.UsageServer: x509.ExtKeyUsageServerAuth}[usage]
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{want}) {
			t.Errorf("%s certificate's key usages %v, want only %v", usage, cert.ExtKeyUsage, want)
		}
		if node, got, ok := pki.NodeIdentity(cert); !ok || node != "node-a" || got != addr {
			t.Errorf("NodeIdentity = %q %v %v, want node-a 10.0.0.5", node, got, ok)
		}
		opts := x509.VerifyOptions{Roots: nca.Pool(), KeyUsages: []x509.ExtKeyUsage{want}}
		for _, tc := range []struct {
			at   time.Time
			host string
			ok   bool
		}{
			{now, "10.0.0.5", true},
			{now.Add(23 * time.Hour), "10.0.0.5", true},
			{now.Add(25 * time.Hour), "10.0.0.5", false}, // a day's certificate
			{now, "localhost", false},
			{now, "127.0.0.1", false},
			{now, "node-a", false},
		} {
			opts.CurrentTime, opts.DNSName = tc.at, tc.host
			if _, err := cert.Verify(opts); (err == nil) != tc.ok {
				t.Errorf("%s certificate for %s at now+%s: %v, want valid %v", usage, tc.host, tc.at.Sub(now), err, tc.ok)
			}
		}
		// The cluster CA's clients (the CLI, agents, etcd) do not trust it.
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Errorf("a node %s certificate verifies against the cluster CA", usage)
		}
	}
	if _, err := nca.Sign(csr, pki.NodeCert{Node: "node-a", Address: addr, Usage: "both"}, now); err == nil {
		t.Error("signed a certificate of an unknown usage")
	}
	if _, err := nca.Sign(csr, pki.NodeCert{Node: "Node_A", Address: addr, Usage: api.UsageClient}, now); err == nil {
		t.Error("signed a certificate for a bad node name")
	}
}

func TestNodeIdentityWantsANodeCertificate(t *testing.T) {
	ca, _ := newCA(t)
	for _, leaf := range []pki.Leaf{
		{CommonName: "surge:node:node-a", Hosts: []string{"10.0.0.5"}, Client: true}, // not the node organization
		{CommonName: "surge-apiserver", Hosts: []string{"10.0.0.5"}, Client: true},
	} {
		certPEM, _, err := ca.Issue(leaf, now)
		if err != nil {
			t.Fatal(err)
		}
		if node, _, ok := pki.NodeIdentity(parse(t, certPEM)); ok {
			t.Errorf("certificate %q names node %q", leaf.CommonName, node)
		}
	}
}

func TestExtraNamesAndParseCSR(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.5")
	for _, tc := range []struct {
		name string
		tmpl x509.CertificateRequest
		want []string
	}{
		{"bare", x509.CertificateRequest{}, nil},
		{"its own names", x509.CertificateRequest{Subject: pkix.Name{CommonName: "surge:node:node-a"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.5")}}, nil},
		{"localhost", x509.CertificateRequest{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, []string{"localhost", "127.0.0.1"}},
		{"another node", x509.CertificateRequest{Subject: pkix.Name{CommonName: "surge:node:node-b"}}, []string{"common name surge:node:node-b"}},
		{"the API", x509.CertificateRequest{Subject: pkix.Name{CommonName: "surge-apiserver"}, DNSNames: []string{"api.example.test"}}, []string{"common name surge-apiserver", "api.example.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, _, _ := csrFor(t, &tc.tmpl)
			if got := pki.ExtraNames(csr, "node-a", addr); !slices.Equal(got, tc.want) {
				t.Errorf("ExtraNames = %q, want %q", got, tc.want)
			}
		})
	}
	_, _, der := csrFor(t, &x509.CertificateRequest{})
	tampered := slices.Clone(der)
	tampered[len(tampered)-1] ^= 0xff
	ca, _ := newCA(t)
	for _, bad := range []struct{ name, pem string }{
		{"no PEM", "junk"},
		{"a certificate, not a request", string(ca.CertPEM)},
		{"garbage in the block", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("junk")}))},
		{"a broken signature", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))},
	} {
		if _, err := pki.ParseCSR([]byte(bad.pem)); err == nil {
			t.Errorf("%s: parsed", bad.name)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	for _, content := range []string{"one", "two"} {
		if err := pki.WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("mode %o, want 0600", m)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v, %v; want only the file, no temporary left", entries, err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(t.TempDir(), "missing", "x"), nil, 0o600); err == nil {
		t.Error("wrote into a directory that does not exist")
	}
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// verify checks that cert chains to ca and is valid for host at the time.
func verify(t *testing.T, ca *pki.CA, cert *x509.Certificate, host string, at time.Time) {
	t.Helper()
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), DNSName: host, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		t.Errorf("certificate for %s at %v: %v", host, at, err)
	}
}

// TestGatewayCA: the gateway CA signs certificates for its domain and
// loopback, which verify against it alone, keeps and reuses them until two
// thirds of their life, refuses names outside its constraints (which
// verifiers enforce too), and is refused for another domain.
func TestGatewayCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	g, err := pki.LoadOrCreateGatewayCA(dir, "surge.localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, filepath.Join(dir, "gateway-ca.key")); m != 0o600 {
		t.Errorf("gateway-ca.key mode %v, want 0600", m)
	}
	base := filepath.Join(t.TempDir(), "domain")
	hosts := []string{"*.surge.localhost", "localhost", "127.0.0.1", "::1"}
	c1, err := g.LoadOrIssue(base, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hello.surge.localhost", "localhost", "127.0.0.1", "::1"} {
		if _, err := c1.Leaf.Verify(x509.VerifyOptions{Roots: g.Pool(), DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := c1.Leaf.Verify(x509.VerifyOptions{Roots: g.Pool(), DNSName: "a.b.surge.localhost", CurrentTime: now}); err == nil {
		t.Errorf("*.surge.localhost verified for a.b.surge.localhost")
	}

	again, err := g.LoadOrIssue(base, hosts, now.Add(59*24*time.Hour))
	if err != nil || again.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) != 0 {
		t.Errorf("LoadOrIssue after 59 days: %v, new serial %v; want the kept certificate", err, again.Leaf.SerialNumber)
	}
	renewAt := pki.GatewayCertRenewAt(c1.Leaf)
	renewed, err := g.LoadOrIssue(base, hosts, renewAt.Add(time.Minute))
	if err != nil || renewed.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) == 0 {
		t.Errorf("LoadOrIssue after GatewayCertRenewAt: %v; want a new certificate", err)
	}
	if d := renewAt.Sub(c1.Leaf.NotBefore); d < 59*24*time.Hour || d > 61*24*time.Hour {
		t.Errorf("renewed %v after issue, want two thirds of %v", d, pki.GatewayCALifetime)
	}

	ns, err := g.LoadOrIssue(filepath.Join(t.TempDir(), "team"), []string{"*.team.surge.localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Leaf.Verify(x509.VerifyOptions{Roots: g.Pool(), DNSName: "api.team.surge.localhost", CurrentTime: now}); err != nil {
		t.Errorf("namespace certificate: %v", err)
	}

	for _, h := range []string{"www.example.com", "*.localhost.example", "10.0.0.1", "surge.localhost.evil.test"} {
		if _, err := g.LoadOrIssue(filepath.Join(t.TempDir(), "x"), []string{h}, now); err == nil || !strings.Contains(err.Error(), "may not sign") {
			t.Errorf("LoadOrIssue(%s): %v; want a refusal", h, err)
		}
	}

	// The constraints are in the CA: a certificate signed with its key by
	// hand, for another site, does not verify.
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "gateway-ca.crt"), filepath.Join(dir, "gateway-ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if c := pair.Leaf; !c.PermittedDNSDomainsCritical || !slices.Equal(c.PermittedDNSDomains, []string{"surge.localhost", "localhost"}) || len(c.PermittedIPRanges) != 2 {
		t.Errorf("gateway CA constraints: critical %v, DNS %v, IP %v", c.PermittedDNSDomainsCritical, c.PermittedDNSDomains, c.PermittedIPRanges)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), DNSNames: []string{"www.example.com"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pair.Leaf, &key.PublicKey, pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := x509.ParseCertificate(der)
	if _, err := forged.Verify(x509.VerifyOptions{Roots: g.Pool(), DNSName: "www.example.com", CurrentTime: now}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("a certificate for www.example.com from the gateway CA's key: %v; want it refused by the name constraints", err)
	}

	if _, err := pki.LoadOrCreateGatewayCA(dir, "example.test", now); err == nil || !strings.Contains(err.Error(), "remove it and gateway-ca.key") {
		t.Errorf("the CA for another domain: %v; want a refusal saying what to do", err)
	}
	if g2, err := pki.LoadOrCreateGatewayCA(dir, "a.surge.localhost", now); err != nil || !bytes.Equal(g2.CertPEM(), g.CertPEM()) {
		t.Errorf("a subdomain of the CA's: %v; want the same CA", err)
	}
}
