package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

var gatewayName = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.:]{0,127}$`)

// statsRoutes takes the gateways' per-second load reports. Each is kept in
// etcd under the gateway's name, overwritten every second, so that the
// autoscaler leader — on whichever server — sums the latest window of every
// gateway, and a gateway that stops reporting ages out by its timestamp.
func (s *Server) statsRoutes() {
	s.handle("POST /v1/stats", auth.ResourceStats, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		var st api.GatewayStats
		if err := decodeBody(w, r, &st); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		var errs api.FieldErrors
		if !gatewayName.MatchString(st.Gateway) {
			errs = append(errs, api.FieldError{Field: "gateway", Message: "must be 1 to 128 letters, digits, '-', '_', '.' or ':'"})
		}
		for i, l := range st.Revisions {
			if _, _, ok := api.ParseRevisionName(l.Revision); !ok {
				errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d].revision", i), Message: fmt.Sprintf("%q is not a revision name", l.Revision)})
			}
			if l.Concurrency < 0 || l.Requests < 0 {
				errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d]", i), Message: "counts must not be negative"})
			}
		}
		if len(errs) > 0 {
			writeError(w, s.cfg.Log, api.Invalid("stats", st.Gateway, errs))
			return
		}
		// The server's clock, not the gateway's, decides freshness.
		st.At = s.cfg.Clock.Now().UTC()
		b, _ := json.Marshal(&st)
		key := store.StatsPrefix + principal(r.Context()).ID + "/" + st.Gateway
		if _, err := s.cfg.Store.Client().Put(r.Context(), key, string(b)); err != nil {
			writeError(w, s.cfg.Log, fmt.Errorf("store stats: %w", err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
