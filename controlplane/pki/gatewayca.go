package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// GatewayCALifetime is how long a gateway certificate is valid; the
// gateway asks for a new one two thirds through (GatewayCertRenewAt).
// Three months: a certificate left on a disk ages out, and a `surge up`
// restarted after weeks still finds its own.
const GatewayCALifetime = 90 * 24 * time.Hour

// GatewayCA signs the certificates `surge up`'s gateway serves HTTPS
// with (DIR/gateway-ca.crt and gateway-ca.key). It is a CA of its own,
// apart from the cluster CA and the node CA, because users are asked to
// trust it — `curl --cacert`, a browser, the system's store — and it is
// name-constrained (RFC 5280 §4.2.1.10, critical) to the gateway's
// domain, localhost and the loopback addresses: trusting it trusts it for
// those names alone, so its key, should it leak, lets no one pass for any
// other site. Go, OpenSSL (curl) and the browsers enforce the
// constraints.
type GatewayCA struct {
	ca      *CA
	domains []string // the permitted DNS domains
}

// LoadOrCreateGatewayCA reads DIR/gateway-ca.crt and gateway-ca.key,
// making them first, constrained to domain and localhost, when neither
// exists. A CA made for another domain is refused, saying what to do.
func LoadOrCreateGatewayCA(dir, domain string, now time.Time) (*GatewayCA, error) {
	certPath := filepath.Join(dir, "gateway-ca.crt")
	if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
		if err := createGatewayCA(dir, domain, now); err != nil {
			return nil, fmt.Errorf("gateway CA: %w", err)
		}
	}
	ca, err := loadOrCreateCA(dir, "gateway-ca", "surge-gateway-ca", now)
	if err != nil {
		return nil, fmt.Errorf("gateway CA: %w", err)
	}
	g := &GatewayCA{ca: ca, domains: ca.Cert.PermittedDNSDomains}
	if !g.permits(domain) {
		return nil, fmt.Errorf("gateway CA %s is for %s, not the gateway's domain %s: remove it and gateway-ca.key to make one for %s (and trust the new one)",
			certPath, strings.Join(g.domains, ", "), domain, domain)
	}
	return g, nil
}

// createGatewayCA makes the name-constrained CA in dir.
func createGatewayCA(dir, domain string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	_, v4, _ := net.ParseCIDR("127.0.0.0/8")
	_, v6, _ := net.ParseCIDR("::1/128")
	tmpl := &x509.Certificate{
		SerialNumber:                serial(),
		Subject:                     pkix.Name{CommonName: "surge-gateway-ca " + domain, Organization: []string{"surge"}},
		NotBefore:                   now.Add(-time.Hour),
		NotAfter:                    now.Add(caLifetime),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{domain, "localhost"},
		PermittedIPRanges:           []*net.IPNet{v4, v6},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return writePair(filepath.Join(dir, "gateway-ca.crt"), certPEM, filepath.Join(dir, "gateway-ca.key"), key)
}

// permits reports whether the CA may sign for domain and its subdomains.
func (g *GatewayCA) permits(domain string) bool {
	for _, d := range g.domains {
		if domain == d || strings.HasSuffix(domain, "."+d) {
			return true
		}
	}
	return false
}

// permitsHost reports whether the CA's constraints let it sign for h.
func (g *GatewayCA) permitsHost(h string) bool {
	if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	return h != "" && g.permits(strings.TrimPrefix(h, "*."))
}

// CertPEM is the CA's certificate, PEM: what clients trust.
func (g *GatewayCA) CertPEM() []byte { return g.ca.CertPEM }

// Pool returns a cert pool holding only the gateway CA.
func (g *GatewayCA) Pool() *x509.CertPool { return g.ca.Pool() }

// GatewayCertRenewAt is when a gateway certificate is renewed: two
// thirds through its life.
func GatewayCertRenewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// LoadOrIssue returns the serving certificate at BASE.crt/BASE.key,
// issuing a new one for hosts (DNS names, "*." wildcards, IP addresses)
// when it is missing, not this CA's, for other hosts, or past
// GatewayCertRenewAt.
func (g *GatewayCA) LoadOrIssue(base string, hosts []string, now time.Time) (tls.Certificate, error) {
	for _, h := range hosts {
		if !g.permitsHost(h) {
			return tls.Certificate{}, fmt.Errorf("gateway CA: %q is not under %s or a loopback address: the CA may not sign for it", h, strings.Join(g.domains, ", "))
		}
	}
	certPath, keyPath := base+".crt", base+".key"
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		c := pair.Leaf
		if c != nil && c.CheckSignatureFrom(g.ca.Cert) == nil && now.Before(GatewayCertRenewAt(c)) && slices.Equal(certHosts(c), hosts) {
			return pair, nil
		}
	}
	leaf := Leaf{CommonName: hosts[0], Hosts: hosts, Server: true}
	certPEM, key, err := g.ca.issue(leaf, now, GatewayCALifetime)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePair(certPath, certPEM, keyPath, key); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certPath, keyPath)
}

// certHosts is what Issue put in c for its hosts, in their order: DNS
// names, then addresses.
func certHosts(c *x509.Certificate) []string {
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	return hosts
}
