package apiserver

import (
	"errors"
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest = api.TokenRequest

// TokenResponse answers POST /v1/tokens; its Secret is shown only this once.
type TokenResponse = api.NewToken

// shownToken is what the API shows of a stored token.
func shownToken(t auth.Token) api.Token {
	return api.Token{ID: t.ID, Role: string(t.Role), Description: t.Description, Created: t.Created}
}

// tokenRoutes serve the admin's token verbs (surge token create, ls,
// revoke). A revocation holds at once on every API server: none keeps
// tokens in memory (each request reads etcd), and the streams a revoked
// token holds open end as etcd tells of it (cutOnRevoke).
func (s *Server) tokenRoutes() {
	s.handle("POST /v1/tokens", auth.ResourceTokens, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		role := auth.Role(req.Role)
		if !role.Valid() {
			writeError(w, s.cfg.Log, api.Invalid("token", "", api.FieldErrors{{Field: "role",
				Message: "must be one of admin, viewer, node, gateway"}}))
			return
		}
		if len(req.Description) > maxTokenDescription {
			writeError(w, s.cfg.Log, api.Invalid("token", "", api.FieldErrors{{Field: "description",
				Message: "must be at most 256 bytes"}}))
			return
		}
		secret, tok, err := s.cfg.Tokens.Create(r.Context(), role, req.Description)
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeJSON(w, http.StatusCreated, TokenResponse{Token: shownToken(tok), Secret: secret})
	})
	s.handle("GET /v1/tokens", auth.ResourceTokens, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		toks, err := s.cfg.Tokens.List(r.Context())
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		items := make([]api.Token, len(toks))
		for i, t := range toks {
			items[i] = shownToken(t)
		}
		writeJSON(w, http.StatusOK, api.List[api.Token]{Items: items})
	})
	s.handle("DELETE /v1/tokens/{id}", auth.ResourceTokens, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		ok, err := s.cfg.Tokens.Delete(r.Context(), id)
		switch {
		case errors.Is(err, auth.ErrLastAdmin):
			writeError(w, s.cfg.Log, api.NewError(http.StatusConflict, api.ReasonConflict,
				"token %s is the last admin token: create another admin token first (surge token create --role admin)", id))
			return
		case err != nil:
			writeError(w, s.cfg.Log, err)
			return
		case !ok:
			writeError(w, s.cfg.Log, api.NotFound("token", id))
			return
		}
		s.cfg.Log.Info("token revoked", "id", id, "by", principal(r.Context()).Name())
		writeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "id": id})
	})
}

// maxTokenDescription bounds a token's description, which every token
// list carries.
const maxTokenDescription = 256
