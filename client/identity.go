package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
)

// NewWithCertificate returns a client that authenticates with a client
// certificate (a node's) instead of a token: cfg's token is not sent.
// cert is called at each TLS handshake, from the client's connection
// goroutines, and must not block; it returns the current certificate. A
// certificate holds for a connection's life, so whoever renews it calls
// CloseConnections, and the client dials anew with the new one.
func NewWithCertificate(cfg *Config, cert func() *tls.Certificate) (*Client, error) {
	noToken := *cfg
	noToken.Token = ""
	// As New's transport dials (DialTimeout: on to the next server soon).
	conns := &connSet{dialer: net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}, open: map[*trackedConn]struct{}{}}
	c, err := newClient(&noToken, func(tr *http.Transport) {
		tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := cert(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none: the server asks, but does not require one
		}
		tr.DialContext = conns.dial
	})
	if err != nil {
		return nil, err
	}
	c.conns = conns
	return c, nil
}

// CloseConnections closes every connection of the client, idle or busy,
// as kubelet does when it rotates its certificate: requests in flight
// fail (a Watch resumes), and the next ones dial anew. A client without a
// certificate closes its idle connections only.
func (c *Client) CloseConnections() {
	if t, ok := c.http.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	if c.conns != nil {
		c.conns.closeAll()
	}
}

// connSet remembers the connections a transport dialed and still holds.
type connSet struct {
	dialer net.Dialer
	mu     sync.Mutex
	open   map[*trackedConn]struct{}
}

func (s *connSet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc, set: s}
	s.mu.Lock()
	s.open[c] = struct{}{}
	s.mu.Unlock()
	return c, nil
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.open))
	for c := range s.open {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// trackedConn leaves its set as it closes.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.open, c)
		c.set.mu.Unlock()
	})
	return c.Conn.Close()
}

// Bootstrap trades c's token (the cluster's join token) for node's client
// certificate, at address, as a node agent does once when it first joins:
// it makes a key, sends a certificate request for it, and returns the key
// with the certificate the API signed.
func Bootstrap(ctx context.Context, c *Client, node, address string) (tls.Certificate, error) {
	return certify(ctx, c, node, "/bootstrap", func(csr string) any {
		return api.BootstrapRequest{CSR: csr, Address: address}
	})
}

// RequestCertificate asks the API, as node (c authenticates with node's
// client certificate), for a new certificate of usage: a renewed client
// certificate, or the agent's serving certificate.
func RequestCertificate(ctx context.Context, c *Client, node string, usage api.CertificateUsage) (tls.Certificate, error) {
	return certify(ctx, c, node, "/certificate", func(csr string) any {
		return api.CertificateRequest{CSR: csr, Usage: usage}
	})
}

// certify makes a key and has the API certify it at the node's route sub.
func certify(ctx context.Context, c *Client, node, sub string, body func(csr string) any) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate of node %s: generate key: %w", node, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate of node %s: %w", node, err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	var resp api.CertificateResponse
	if err := c.Do(ctx, http.MethodPost, ObjectPath[api.Node](api.Key{Name: node})+sub, body(string(csr)), &resp); err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate of node %s: %w", node, err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return ParseKeyPair([]byte(resp.Certificate), keyPEM)
}

// EncodeKey returns an EC private key as PEM, as ParseKeyPair reads it.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPair reads a PEM certificate and its key into a tls.Certificate
// with its Leaf parsed.
func ParseKeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate and key: %w", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
		}
	}
	return pair, nil
}

// EncodeKeyPair returns a tls.Certificate as PEM, its chain and its key,
// as ParseKeyPair reads them; the key must be an EC key (as Bootstrap and
// RequestCertificate make).
func EncodeKeyPair(c tls.Certificate) (certPEM, keyPEM []byte, err error) {
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("encode key: not an EC key")
	}
	if keyPEM, err = EncodeKey(key); err != nil {
		return nil, nil, err
	}
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return certPEM, keyPEM, nil
}

// GossipKey fetches the cluster's gossip key, as a member of its gossip (a
// node, by its certificate, or a gateway) does before it joins.
func GossipKey(ctx context.Context, c *Client) ([]byte, error) {
	var k api.GossipKey
	if err := c.Do(ctx, http.MethodGet, "/v1/gossip/key", nil, &k); err != nil {
		return nil, fmt.Errorf("get the gossip key: %w", err)
	}
	key, err := hex.DecodeString(k.Key)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("get the gossip key: the API answered a key that is not hex")
	}
	return key, nil
}
