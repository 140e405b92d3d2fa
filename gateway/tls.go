package gateway

import (
	"crypto/tls"
	"net"
)

// HTTPS. The gateway terminates TLS itself, with Go's crypto/tls, on a
// second listener (Config.TLSAddr) served by the same fasthttp server and
// handler as plain HTTP: a request over TLS is routed, queued, proxied and
// counted as any other, and the replica sees X-Forwarded-Proto: https.
//
// Layers, from the socket up: the TCP connection; a clientConn, which
// saves system calls and timers (held writes, lazy deadlines: see
// clientconn.go); a tls.Conn; fasthttp. The clientConn is below TLS, where
// its tricks stay true: it holds back the encrypted record of a complete
// answer until fasthttp reads again, and tls.Conn reads the socket only
// when it needs bytes for its next record, so "wait until the socket is
// readable, then read" never misses bytes buffered in TLS. A tlsConn
// keeps the clientConn at hand for the handler (holdAnswer, holdNothing).
//
// Protocol: TLS 1.2 and 1.3 only; for 1.2, ECDHE key exchange with AEAD
// ciphers only (Mozilla's "intermediate" list, the one every current
// client speaks); 1.3's suites are all AEAD and Go picks among them.
// Session resumption is on: stateless tickets (1.2) and PSK tickets
// (1.3), under keys crypto/tls makes and rotates by itself (a new one a
// day, each accepted for a week). A resumed session skips the
// certificate and the signature, the costly part of a handshake. The
// keys are the process's own, so a client resumes with the gateway that
// gave it the ticket only. ALPN offers http/1.1 alone: a client that
// asks only for h2 (gRPC) is refused at the handshake, with
// no_application_protocol, rather than answered in a protocol it did not
// ask for. See docs/design.md, "HTTP/2", for why h2 is not served.

// tlsSuites are the TLS 1.2 cipher suites the gateway accepts: forward
// secret and authenticated encryption, nothing else.
var tlsSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// newTLSConfig is the gateway's server configuration, its certificates
// chosen by certs.
func newTLSConfig(certs *certStore) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   tlsSuites,
		GetCertificate: certs.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}

// tlsListener makes a server-side tls.Conn of each connection its inner
// listener (a clientListener) accepts. The handshake happens later, on
// the connection's own goroutine (fasthttp calls Handshake first), so a
// slow client holds up no other.
type tlsListener struct {
	net.Listener
	config *tls.Config
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &tlsConn{Conn: tls.Server(c, l.config)}
	if cc, ok := c.(*clientConn); ok {
		tc.cc, cc.outer = cc, tc
	}
	return tc, nil
}

// tlsConn is a client's TLS connection, with the clientConn under it
// (nil when the listener gave another kind). fasthttp sees it as a
// tls.Conn (ctx.IsTLS, the handshake).
type tlsConn struct {
	*tls.Conn
	cc *clientConn
}

// Close sends TLS's close_notify after what the clientConn holds back,
// and closes. It may be called from any goroutine (fasthttp's shutdown
// closes idle connections from its own): the clientConn then writes the
// alert as it comes, touching none of its owner's state.
//
// A connection being parked (park.go) is not closed: its clientConn goes
// to the parking, and this tlsConn, its session whole, is served again
// when the client sends its next request. Only the owner parks, after
// the clientConn's Read returned errParked, which tls.Conn passes up
// without failing the session (a temporary error), and fasthttp takes
// for a keep-alive connection's quiet end. The parking reads nothing of
// the socket itself (it waits for readability), so no byte is taken from
// under TLS.
func (c *tlsConn) Close() error {
	if c.cc == nil {
		return c.Conn.Close()
	}
	if c.cc.parking {
		return c.cc.Close()
	}
	c.cc.closing.Store(true)
	return c.Conn.Close()
}

// underClientConn returns the clientConn a connection is or holds, or nil.
func underClientConn(c net.Conn) *clientConn {
	switch c := c.(type) {
	case *clientConn:
		return c
	case *tlsConn:
		return c.cc
	}
	return nil
}
