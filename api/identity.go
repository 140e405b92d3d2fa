package api

import (
	"net/netip"
	"strings"
)

// The names in certificates that say who holds them. Roles check them on
// either side of a connection: the API server reads a node's identity from
// its client certificate, and a node agent accepts on its endpoint only the
// API server's client certificate.
const (
	// NodeCommonNamePrefix starts the common name of a node's
	// certificates: "surge:node:NAME", as Kubernetes' "system:node:NAME".
	NodeCommonNamePrefix = "surge:node:"
	// NodeOrganization is the organization of every node certificate.
	NodeOrganization = "surge:nodes"
	// APIServerClientName is the common name of the certificate the API
	// server presents to node agents (replica logs).
	APIServerClientName = "surge:apiserver"
)

// NodeCommonName is the common name of node's certificates.
func NodeCommonName(node string) string { return NodeCommonNamePrefix + node }

// NodeFromCommonName returns the node a certificate's common name names,
// and whether it names one.
func NodeFromCommonName(cn string) (string, bool) {
	node, ok := strings.CutPrefix(cn, NodeCommonNamePrefix)
	if !ok || ValidateName(node) != nil {
		return "", false
	}
	return node, true
}

// BootstrapRequest is the body of POST /v1/nodes/NAME/bootstrap: a node
// agent trades the cluster's join token, once, for a client certificate
// that is its own lasting credential.
type BootstrapRequest struct {
	// CSR is a PEM certificate request for the agent's key.
	CSR string `json:"csr"`
	// Address is the node's address as peers reach it. The server takes
	// it only when the request comes from there.
	Address string `json:"address"`
}

// CertificateUsage says what a node certificate is for.
type CertificateUsage string

// Certificate usages.
const (
	// UsageClient is the node's identity towards the API.
	UsageClient CertificateUsage = "client"
	// UsageServer is the agent's serving certificate (its endpoint, which
	// only the API server calls).
	UsageServer CertificateUsage = "server"
)

// CertificateRequest is the body of POST /v1/nodes/NAME/certificate: a
// node, authenticated by its client certificate, asks for a new client
// certificate (renewal) or for a serving certificate.
type CertificateRequest struct {
	// CSR is a PEM certificate request for the key to certify.
	CSR string `json:"csr"`
	// Usage is client or server.
	Usage CertificateUsage `json:"usage"`
}

// CertificateResponse answers both: the signed certificate, PEM.
type CertificateResponse struct {
	Certificate string `json:"certificate"`
}

// GossipKey is the answer of GET /v1/gossip/key: the cluster's gossip
// key, hex-encoded, for the members of its gossip (nodes and gateways).
// It is a secret of its own, made by the first server: the join token,
// which every node host holds, does not give it.
type GossipKey struct {
	Key string `json:"key"`
}

// ValidAgentURL reports whether u is a node agent's endpoint the API may
// dial: https, at the node's registered address (an IP), a port, and
// nothing else (no user, path, query or fragment).
func ValidAgentURL(u string, address netip.Addr) bool {
	rest, ok := strings.CutPrefix(u, "https://")
	if !ok || !address.IsValid() {
		return false
	}
	ap, err := netip.ParseAddrPort(rest)
	return err == nil && ap.Addr().Unmap() == address.Unmap() && ap.Port() != 0 && ap.Addr().Zone() == ""
}
