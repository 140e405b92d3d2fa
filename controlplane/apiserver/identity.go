package apiserver

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"

	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/pki"
)

// nodeIdentity returns the node whose client certificate r came with, and
// whether it came with one. The listener asks for a client certificate but
// neither requires nor checks it (tokens keep working, and a node whose
// certificate is stale is told so here in a 401 it can act on, rather than
// by a failed handshake); this checks it: it must chain to the node CA, on
// the server's clock, be for client authentication, and name a node. No
// certificate of the cluster CA (etcd's, say) ever passes for a node's.
func (s *Server) nodeIdentity(r *http.Request) (auth.Principal, bool, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return auth.Principal{}, false, nil
	}
	if s.nodeRoots == nil {
		return auth.Principal{}, true, unauthorized("client certificate not accepted: this server certifies no nodes")
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.nodeRoots, Intermediates: inter, CurrentTime: s.cfg.Clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return auth.Principal{}, true, unauthorized(fmt.Sprintf("client certificate %q not accepted: %v; a node whose certificate is stale joins again with the join token", leaf.Subject.CommonName, err))
	}
	node, addr, ok := pki.NodeIdentity(leaf)
	if !ok {
		return auth.Principal{}, true, unauthorized(fmt.Sprintf("client certificate %q names no node", leaf.Subject.CommonName))
	}
	return auth.NodePrincipal(node, addr), true, nil
}

// remoteAddr is the address a request comes from: the API is reached
// directly (nodes and the API must reach each other with no NAT between),
// so this is the node's own.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// sameMachine reports whether a node that says it is at claimed may be
// believed when its request comes from from: the two are equal, or both
// are this server's own (an agent on the server's machine reaches the API
// from whichever of the machine's addresses the kernel picks, loopback
// included).
func sameMachine(claimed, from netip.Addr) bool {
	claimed, from = claimed.Unmap(), from.Unmap()
	if claimed == from {
		return true
	}
	own := localAddrs()
	isOwn := func(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(own, a) }
	return isOwn(claimed) && isOwn(from)
}

// localAddrs lists this machine's interface addresses; it is read at each
// bootstrap whose address is not where the request comes from, which is
// rare, so it is not cached.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
