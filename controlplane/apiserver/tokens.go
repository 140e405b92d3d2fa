package apiserver

import (
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Role        auth.Role `json:"role"`
	Description string    `json:"description,omitempty"`
}

// TokenResponse answers POST /v1/tokens; Token is shown only this once.
type TokenResponse struct {
	auth.Token
	Secret string `json:"token"`
}

func (s *Server) tokenRoutes() {
	s.handle("POST /v1/tokens", auth.ResourceTokens, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		if !req.Role.Valid() {
			writeError(w, s.cfg.Log, api.Invalid("token", "", api.FieldErrors{{Field: "role",
				Message: "must be one of admin, viewer, node, gateway"}}))
			return
		}
		secret, tok, err := s.cfg.Tokens.Create(r.Context(), req.Role, req.Description)
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeJSON(w, http.StatusCreated, TokenResponse{Token: tok, Secret: secret})
	})
	s.handle("GET /v1/tokens", auth.ResourceTokens, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		toks, err := s.cfg.Tokens.List(r.Context())
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, api.List[auth.Token]{Items: toks})
	})
	s.handle("DELETE /v1/tokens/{id}", auth.ResourceTokens, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		ok, err := s.cfg.Tokens.Delete(r.Context(), r.PathValue("id"))
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		if !ok {
			writeError(w, s.cfg.Log, api.NotFound("token", r.PathValue("id")))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "id": r.PathValue("id")})
	})
}
