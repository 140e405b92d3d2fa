package apiserver

import (
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// CertificateRequest is the body of POST /v1/nodes/NAME/certificate.
type CertificateRequest struct {
	// CSR is a PEM certificate request for the agent's serving key.
	CSR string `json:"csr"`
}

// CertificateResponse carries the signed certificate and the CA.
type CertificateResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// certificateRoutes lets a node agent get a serving certificate from the
// cluster CA for its own endpoint (replica logs), as a kubelet's TLS
// bootstrap does. The certificate names the node and its registered
// address, nothing the agent asks for.
func (s *Server) certificateRoutes() {
	if s.cfg.SignCSR == nil {
		return
	}
	s.handle("POST /v1/"+api.NodeKind.Plural+"/{name}/certificate", api.NodeKind.Plural, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		var req CertificateRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		n, err := store.Get[api.Node](r.Context(), s.cfg.Store, api.Key{Name: r.PathValue("name")})
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		hosts := []string{n.Metadata.Name, "localhost", "127.0.0.1", "::1"}
		if n.Status.Address != "" {
			hosts = append(hosts, n.Status.Address)
		}
		cert, ca, err := s.cfg.SignCSR([]byte(req.CSR), "surge-agent-"+n.Metadata.Name, hosts)
		if err != nil {
			writeError(w, s.cfg.Log, fieldError("csr", "%v", err))
			return
		}
		writeJSON(w, http.StatusOK, CertificateResponse{Certificate: string(cert), CA: string(ca)})
	})
}
