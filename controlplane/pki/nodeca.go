package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/surgeplatform/surge/api"
)

// NodeCertLifetime is how long a node certificate is valid. A day bounds
// what a stolen node key is worth; agents renew at two thirds of it
// (RenewAt), so a node that stays up never sees its certificate expire,
// and one that was down longer rejoins with the join token.
const NodeCertLifetime = 24 * time.Hour

// nodeClockSkew backdates node certificates, so that an agent whose clock
// is a little behind the server's takes a new one as valid at once.
const nodeClockSkew = 5 * time.Minute

// NodeCA signs nodes' certificates. It is a certificate authority of its
// own, with its own key (DIR/node-ca.crt and node-ca.key), apart from the
// cluster CA that signs the API's and etcd's certificates. Only the API
// server trusts it: to know a node by its client certificate, and to know
// a node agent it calls by its serving certificate. Clients of the API and
// etcd trust the cluster CA alone, so no certificate a node can get, for
// whatever address, passes for the API or etcd.
type NodeCA struct{ ca *CA }

// LoadOrCreateNodeCA reads DIR/node-ca.crt and DIR/node-ca.key, making
// them first when neither exists.
func LoadOrCreateNodeCA(dir string, now time.Time) (*NodeCA, error) {
	ca, err := loadOrCreateCA(dir, "node-ca", "surge-node-ca", now)
	if err != nil {
		return nil, fmt.Errorf("node CA: %w", err)
	}
	return &NodeCA{ca: ca}, nil
}

// Certificate is the node CA's own certificate.
func (n *NodeCA) Certificate() *x509.Certificate { return n.ca.Cert }

// Pool returns a cert pool holding only the node CA.
func (n *NodeCA) Pool() *x509.CertPool { return n.ca.Pool() }

// NodeCert says what node certificate to sign.
type NodeCert struct {
	// Node names the node: the certificate's common name is
	// api.NodeCommonName(Node).
	Node string
	// Address is the node's registered address, the certificate's only
	// subject alternative name.
	Address netip.Addr
	// Usage is client (the node's identity towards the API) or server
	// (the agent's endpoint).
	Usage api.CertificateUsage
}

// Sign certifies the key of csr as c.Node's, for c.Address alone and one
// usage, valid NodeCertLifetime from now. The names the request asks for
// are not looked at here: the caller refuses a request that asks for more
// than it grants (see ExtraNames).
func (n *NodeCA) Sign(csr *x509.CertificateRequest, c NodeCert, now time.Time) ([]byte, error) {
	if api.ValidateName(c.Node) != nil || !c.Address.IsValid() {
		return nil, fmt.Errorf("sign node certificate: node %q at %v is not a node name and an address", c.Node, c.Address)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: api.NodeCommonName(c.Node), Organization: []string{api.NodeOrganization}},
		NotBefore:    now.Add(-nodeClockSkew),
		NotAfter:     now.Add(NodeCertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  []net.IP{net.IP(c.Address.Unmap().AsSlice())},
	}
	switch c.Usage {
	case api.UsageClient:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case api.UsageServer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		return nil, fmt.Errorf("sign node certificate: usage %q: want client or server", c.Usage)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, n.ca.Cert, csr.PublicKey, n.ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate of node %s: %w", c.Node, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NodeIdentity returns the node and the address a node client certificate
// names, once the caller has verified it against the node CA.
func NodeIdentity(cert *x509.Certificate) (node string, addr netip.Addr, ok bool) {
	if !slices.Equal(cert.Subject.Organization, []string{api.NodeOrganization}) || len(cert.IPAddresses) != 1 {
		return "", netip.Addr{}, false
	}
	node, ok = api.NodeFromCommonName(cert.Subject.CommonName)
	if !ok {
		return "", netip.Addr{}, false
	}
	addr, ok = netip.AddrFromSlice(cert.IPAddresses[0])
	return node, addr.Unmap(), ok
}

// ParseCSR decodes a PEM certificate request and checks its signature (the
// requester holds the key).
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// ExtraNames lists what a certificate request asks for beyond node's
// certificate at addr: a common name other than the node's, and every
// subject alternative name but addr. A node certificate names nothing
// else, so a request that asks for more is refused rather than silently
// trimmed: a caller asking for "localhost" learns that it will not get it.
func ExtraNames(csr *x509.CertificateRequest, node string, addr netip.Addr) []string {
	var extra []string
	if cn := csr.Subject.CommonName; cn != "" && cn != node && cn != api.NodeCommonName(node) {
		extra = append(extra, "common name "+cn)
	}
	for _, d := range csr.DNSNames {
		extra = append(extra, d)
	}
	for _, ip := range csr.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); !ok || a.Unmap() != addr.Unmap() {
			extra = append(extra, ip.String())
		}
	}
	for _, e := range csr.EmailAddresses {
		extra = append(extra, e)
	}
	for _, u := range csr.URIs {
		extra = append(extra, u.String())
	}
	return extra
}
