package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/controlplane/store"
)

// certificateRoutes give nodes their identity, as a kubelet's TLS
// bootstrap does. The join token, which every node and gateway host holds,
// buys one thing: a client certificate for a node, at the address the
// request comes from (POST /v1/nodes/NAME/bootstrap). From then on the
// node authenticates with that certificate alone, and renews it, or gets
// its agent's serving certificate, for itself only (POST
// /v1/nodes/NAME/certificate). Every certificate comes from the node CA,
// names the node and its checked address and nothing else, and lasts
// pki.NodeCertLifetime.
func (s *Server) certificateRoutes() {
	if s.cfg.NodeCA == nil {
		return
	}
	s.handle("POST /v1/"+api.NodeKind.Plural+"/{name}/bootstrap", auth.ResourceBootstrap, auth.Write, s.bootstrapNode)
	s.handle("POST /v1/"+api.NodeKind.Plural+"/{name}/certificate", auth.ResourceCertificates, auth.Write, s.nodeCertificate)
}

// bootstrapNode trades the join token for node NAME's client certificate.
// The node's address is where the request comes from (or, for an agent on
// the server's own machine, any of the machine's addresses). A node that
// exists already may be taken over only from its registered address, or
// once it is dead: a join token does not make its holder another live node.
func (s *Server) bootstrapNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if api.ValidateName(name) != nil {
		writeError(w, s.cfg.Log, api.Invalid(api.KindNode, name, api.FieldErrors{{Field: "metadata.name", Message: fmt.Sprintf("%q %s", name, api.NameRule)}}))
		return
	}
	var req api.BootstrapRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		writeError(w, s.cfg.Log, fieldError("address", "%q is not an IP address: send the node's address as peers reach it", req.Address))
		return
	}
	addr = addr.Unmap()
	if from := remoteAddr(r); !sameMachine(addr, from) {
		e := forbidden("node %s may not join at %s: its request comes from %s; a node joins at the address it reaches the API from (--node-address)", name, addr, from)
		e.Field = "address"
		writeError(w, s.cfg.Log, e)
		return
	}
	switch n, err := store.Get[api.Node](r.Context(), s.cfg.Store, api.Key{Name: name}); {
	case err == nil:
		registered, _ := netip.ParseAddr(n.Status.Address)
		if registered.Unmap() != addr && n.Status.State != api.NodeDead {
			writeError(w, s.cfg.Log, forbidden("node %s is registered at %s and not dead: the join token may not take it over from %s; run its agent at its address, or delete the node first", name, n.Status.Address, addr))
			return
		}
	case !errors.Is(err, api.ErrNotFound):
		writeError(w, s.cfg.Log, err)
		return
	}
	cert, err := s.signNode(req.CSR, pki.NodeCert{Node: name, Address: addr, Usage: api.UsageClient})
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	s.cfg.Log.Info("node joined: certificate issued", "node", name, "address", addr, "by", principal(r.Context()).Name())
	writeJSON(w, http.StatusOK, api.CertificateResponse{Certificate: string(cert)})
}

// nodeCertificate gives a node, authenticated by its client certificate,
// a new client certificate (renewal) or its agent's serving certificate,
// both for itself at the address it was certified for.
func (s *Server) nodeCertificate(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	if p.Node == "" {
		writeError(w, s.cfg.Log, forbidden("%s may not get a node certificate: a node gets its own, with its client certificate (a new node joins with the join token: POST /v1/nodes/NAME/bootstrap)", p.Name()))
		return
	}
	if err := ownNode(p, r.PathValue("name"), "get a certificate"); err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	var req api.CertificateRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	if req.Usage != api.UsageClient && req.Usage != api.UsageServer {
		writeError(w, s.cfg.Log, fieldError("usage", "%q: want client or server", req.Usage))
		return
	}
	cert, err := s.signNode(req.CSR, pki.NodeCert{Node: p.Node, Address: p.Address, Usage: req.Usage})
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, api.CertificateResponse{Certificate: string(cert)})
}

// signNode signs a PEM request as c says, refusing a request that asks
// for any name the certificate will not hold.
func (s *Server) signNode(csrPEM string, c pki.NodeCert) ([]byte, error) {
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return nil, fieldError("csr", "%v", err)
	}
	if extra := pki.ExtraNames(csr, c.Node, c.Address); len(extra) > 0 {
		e := forbidden("node %s may not get a certificate for %s: a node certificate names only the node and its address %s", c.Node, strings.Join(extra, ", "), c.Address)
		e.Field = "csr"
		return nil, e
	}
	return s.cfg.NodeCA.Sign(csr, c, s.cfg.Clock.Now())
}
