package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"time"

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
		if err := s.checkStats(r.Context(), &st); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		if st.MetricsURL != "" {
			// Discovery sends scrapers (and their token) there: only to
			// where the report came from, or to loopback.
			from, _ := netip.ParseAddrPort(r.RemoteAddr)
			u, err := api.NormalizeMetricsURL(st.MetricsURL, from.Addr())
			if err != nil {
				writeError(w, s.cfg.Log, api.Invalid("stats", st.Gateway, api.FieldErrors{{Field: "metricsURL", Message: err.Error()}}))
				return
			}
			st.MetricsURL = u
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

// checkStats validates a load report, each bad field named, against the
// limits: how many revisions, how much load for each, and how many gateway
// names the reporting token uses (a 429 past that).
func (s *Server) checkStats(ctx context.Context, st *api.GatewayStats) error {
	lim := s.cfg.Limits
	var errs api.FieldErrors
	if !gatewayName.MatchString(st.Gateway) {
		errs = append(errs, api.FieldError{Field: "gateway", Message: "must be 1 to 128 letters, digits, '-', '_', '.' or ':'"})
	}
	if n := len(st.Revisions); n > lim.MaxReportedRevisions {
		errs = append(errs, api.FieldError{Field: "revisions", Message: fmt.Sprintf("%d revisions, above this server's limit of %d (MaxReportedRevisions)", n, lim.MaxReportedRevisions)})
	}
	window := st.Window.Duration
	if window <= 0 {
		window = time.Second
	}
	for i, l := range st.Revisions {
		if _, _, ok := api.ParseRevisionName(l.Revision); !ok {
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d].revision", i), Message: fmt.Sprintf("%q is not a revision name", l.Revision)})
		}
		if o := l.Outcomes; o != nil && (o.Requests < 0 || o.Errors < 0 || o.Errors > o.Requests ||
			len(o.Latency) > api.LatencyBuckets || slices.ContainsFunc(o.Latency, func(n int64) bool { return n < 0 })) {
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d].outcomes", i),
				Message: fmt.Sprintf("counts must not be negative, errors not more than requests, and latency at most %d buckets", api.LatencyBuckets)})
		}
		switch {
		case l.Concurrency < 0 || l.Requests < 0:
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d]", i), Message: "counts must not be negative"})
		case l.Concurrency > lim.MaxReportedLoad || float64(l.Requests)/window.Seconds() > lim.MaxReportedLoad:
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("revisions[%d]", i),
				Message: fmt.Sprintf("concurrency %v and %d requests in %v: above this server's limit of %v (MaxReportedLoad)", l.Concurrency, l.Requests, window, lim.MaxReportedLoad)})
		}
	}
	if len(errs) > 0 {
		return api.Invalid("stats", st.Gateway, errs)
	}
	n, known, err := s.cfg.Store.GatewayNames(ctx, principal(ctx).ID, st.Gateway)
	if err != nil {
		return err
	}
	if !known && n >= int64(lim.MaxGatewaysPerToken) {
		return api.NewError(http.StatusTooManyRequests, ReasonTooManyGateways,
			"this token reports load under %d gateway names already, this server's limit (MaxGatewaysPerToken): give more gateways their own token (surge token create --role gateway), or wait a minute for stopped gateways' reports to expire", n)
	}
	return nil
}

// ReasonTooManyGateways is the reason of the 429 that refuses a load
// report under one gateway name too many for its token.
const ReasonTooManyGateways = "TooManyGateways"
