package apiserver

import (
	"context"
	"errors"
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// ActivateResponse answers POST .../scales/NAME/activate.
type ActivateResponse struct {
	Revision string `json:"revision"`
	// Replicas is the revision's desired scale after the call.
	Replicas int32 `json:"replicas"`
	// Activated is true when the call raised it from zero.
	Activated bool `json:"activated"`
}

// activateRoutes serves scale-from-zero: a gateway holding a request for a
// revision with no replica asks for one here at once, rather than waiting
// for the autoscaler's next tick. It never lowers a scale, so calling it
// again, or from many gateways at once, is harmless.
func (s *Server) activateRoutes() {
	s.handle("POST /v1/namespaces/{ns}/"+api.ScaleKind.Plural+"/{name}/activate", auth.ResourceActivations, auth.Write,
		func(w http.ResponseWriter, r *http.Request) {
			out, err := s.activate(r.Context(), api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")})
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
}

func (s *Server) activate(ctx context.Context, key api.Key) (*ActivateResponse, error) {
	name := key.Name
	for {
		sc, err := store.Get[api.Scale](ctx, s.cfg.Store, key)
		if err != nil {
			return nil, err
		}
		if sc.Spec.Replicas > 0 {
			return &ActivateResponse{Revision: name, Replicas: sc.Spec.Replicas}, nil
		}
		out, err := store.SetScaleReplicas(ctx, s.cfg.Store, key, 0, 1)
		if errors.Is(err, api.ErrConflict) {
			continue // someone else raised it: report what they set
		}
		if err != nil {
			return nil, err
		}
		if s.cfg.OnActivate != nil {
			s.cfg.OnActivate(key)
		}
		return &ActivateResponse{Revision: name, Replicas: out.Spec.Replicas, Activated: true}, nil
	}
}
