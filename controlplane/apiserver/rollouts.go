package apiserver

import (
	"context"
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// rollbackRoutes serves POST /v1/namespaces/NS/rollouts/NAME/rollback
// (api.RollbackRequest): all of function NAME's traffic back to the
// revision before its rollout, or to the one named, at once. A revision at
// zero replicas is activated first, as a gateway's request would, so that
// it starts scaling up before the traffic reaches it.
func (s *Server) rollbackRoutes() {
	s.handle("POST /v1/namespaces/{ns}/"+api.RolloutKind.Plural+"/{name}/rollback", api.RolloutKind.Plural, auth.Write,
		func(w http.ResponseWriter, r *http.Request) {
			var in api.RollbackRequest
			if r.ContentLength != 0 {
				if err := decodeBody(w, r, &in); err != nil {
					writeError(w, s.cfg.Log, err)
					return
				}
			}
			key := api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
			if err := validNamespace(api.RolloutKind, key.Namespace); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			out, err := s.rollback(r.Context(), key, in.Revision)
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
}

func (s *Server) rollback(ctx context.Context, function api.Key, to string) (*api.RollbackResponse, error) {
	if to != "" {
		if fn, _, ok := api.ParseRevisionName(to); !ok || fn != function.Name {
			return nil, fieldError("revision", "%q is not a revision of function %q, such as %s", to, function.Name,
				api.RevisionName(function.Name, 1))
		}
	}
	to, err := s.cfg.Store.RollbackTarget(ctx, function, to)
	if err != nil {
		return nil, err
	}
	act, err := s.activate(ctx, api.Key{Namespace: function.Namespace, Name: to}, 1)
	if err != nil {
		return nil, err
	}
	res, err := s.cfg.Store.Rollback(ctx, function, to)
	if err != nil {
		return nil, err
	}
	return &api.RollbackResponse{Rollout: *res.Rollout, Activated: act.Activated}, nil
}

// deleteRevision is DELETE .../revisions/NAME: a revision that takes no
// traffic, has no tag, is not its function's latest and is no rollout's
// way back (store.DeleteRevision says which, with a 409). A
// resourceVersion is not taken: the store checks the function's state.
func (s *Server) deleteRevision(ctx context.Context, key api.Key, rv string) error {
	if rv != "" {
		return fieldError("resourceVersion", "revisions are deleted by name only: their function's traffic and rollout decide")
	}
	return s.cfg.Store.DeleteRevision(ctx, key)
}
