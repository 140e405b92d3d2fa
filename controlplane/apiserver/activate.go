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

// activateRoutes serves activations: a gateway holding requests of a
// revision that its replicas cannot take — it has none, or all are at
// their limit — asks here, with its demand (api.Activation), for the
// replicas they need, rather than waiting for the autoscaler's next tick.
// The autoscaler says how many (OnActivate); the Scale is raised to that
// and never lowered, so calling again, or from many gateways at once, is
// harmless.
func (s *Server) activateRoutes() {
	s.handle("POST /v1/namespaces/{ns}/"+api.ScaleKind.Plural+"/{name}/activate", auth.ResourceActivations, auth.Write,
		func(w http.ResponseWriter, r *http.Request) {
			var in api.Activation
			// No body is an activation for one request, as gateways sent
			// before they sent their demand.
			if r.ContentLength != 0 {
				if err := decodeBody(w, r, &in); err != nil {
					writeError(w, s.cfg.Log, err)
					return
				}
			}
			if in.Demand < 0 {
				e := api.BadRequest("must not be negative, got %d", in.Demand)
				e.Field = "demand"
				writeError(w, s.cfg.Log, e)
				return
			}
			out, err := s.activate(r.Context(), api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}, max(in.Demand, 1))
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
}

func (s *Server) activate(ctx context.Context, key api.Key, demand int32) (*ActivateResponse, error) {
	want := int32(1)
	if s.cfg.OnActivate != nil {
		rev, err := store.Get[api.Revision](ctx, s.cfg.Store, key)
		if err != nil {
			return nil, err
		}
		want = max(s.cfg.OnActivate(rev, demand), 1)
	}
	for {
		sc, err := store.Get[api.Scale](ctx, s.cfg.Store, key)
		if err != nil {
			return nil, err
		}
		if sc.Spec.Replicas >= want {
			return &ActivateResponse{Revision: key.Name, Replicas: sc.Spec.Replicas}, nil
		}
		out, err := store.SetScaleReplicas(ctx, s.cfg.Store, key, sc.Spec.Replicas, want)
		if errors.Is(err, api.ErrConflict) {
			continue // someone else changed it: look again
		}
		if err != nil {
			return nil, err
		}
		return &ActivateResponse{Revision: key.Name, Replicas: out.Spec.Replicas, Activated: sc.Spec.Replicas == 0}, nil
	}
}
