package apiserver

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

var gatewayName = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.:]{0,127}$`)

// statsRoutes takes the gateways' per-second load reports. The store keeps
// each gateway's latest (Store.PutGatewayStats), for the autoscaler leader,
// on whichever server, to sum (store.GatewayLoad).
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
		if st.MetricsURL != "" {
			// Discovery sends scrapers (and their token) there: only to
			// where the report came from, or to loopback.
			from, _ := netip.ParseAddrPort(r.RemoteAddr)
			if u, err := api.NormalizeMetricsURL(st.MetricsURL, from.Addr()); err != nil {
				errs = append(errs, api.FieldError{Field: "metricsURL", Message: err.Error()})
			} else {
				st.MetricsURL = u
			}
		}
		if len(errs) > 0 {
			writeError(w, s.cfg.Log, api.Invalid("stats", st.Gateway, errs))
			return
		}
		// The server's clock, not the gateway's, decides freshness.
		st.At = s.cfg.Clock.Now().UTC()
		if err := s.cfg.Store.PutGatewayStats(r.Context(), principal(r.Context()).ID, &st); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// loadRoutes serves GET /v1/stats: each revision's load summed over the
// gateways' fresh reports (surge ls shows the rps), sorted by namespace
// and revision. Without a LoadSource it answers an empty list.
func (s *Server) loadRoutes() {
	s.handle("GET /v1/stats", auth.ResourceStats, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		out := api.List[api.RevisionRate]{Items: []api.RevisionRate{}}
		if s.cfg.Load != nil {
			load, err := s.cfg.Load.Load(r.Context(), s.cfg.Clock.Now())
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			for k, l := range load {
				fn, _, _ := api.ParseRevisionName(k.Name)
				out.Items = append(out.Items, api.RevisionRate{Namespace: k.Namespace, Function: fn, Revision: k.Name,
					Concurrency: l.Sample.Concurrency, RPS: l.RPS})
			}
			slices.SortFunc(out.Items, func(a, b api.RevisionRate) int {
				return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Revision, b.Revision))
			})
		}
		writeJSON(w, http.StatusOK, out)
	})
}
