package controlplane

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/pki"
)

// loadNodePKI loads, making them at the first start, the node CA
// (pki/node-ca.crt and node-ca.key, which sign nodes' certificates and
// nothing else; servers of one cluster share them, as they share the
// cluster CA) and the API server's client
// certificate towards node agents (from the cluster CA, which the agents
// trust, under the name they accept: api.APIServerClientName).
func (s *Server) loadNodePKI(c *certs, now time.Time) error {
	nodes, err := pki.LoadOrCreateNodeCA(c.dir, now)
	if err != nil {
		return err
	}
	client, err := c.ca.LoadOrIssue(filepath.Join(c.dir, "apiserver-agent-client"), pki.Leaf{
		CommonName: api.APIServerClientName, Client: true,
	}, now)
	if err != nil {
		return fmt.Errorf("API server's client certificate: %w", err)
	}
	c.nodes, c.agentClient = nodes, client
	return nil
}

// apiTLSConfig is the API listener's TLS: the API's certificate, and a
// client certificate asked for (from the node CA) but neither required nor
// checked in the handshake: the API server checks it on its own clock and
// answers a stale one with a 401 a node can act on (see apiserver's
// nodeIdentity); requests without one authenticate with a bearer token.
func apiTLSConfig(c *certs) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.api},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
		ClientCAs:    c.nodes.Pool(),
	}
}
