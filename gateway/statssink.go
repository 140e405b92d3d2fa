package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/clock"
)

// statsSendTimeout bounds one report's send: the next window waits for
// it, and carries fresher numbers than a late one.
const statsSendTimeout = time.Second

// ControlPlaneStatsSink sends each stats window to the control plane,
// where the autoscaler leader sums the windows of every gateway. The
// control plane owns how reports are kept (store.PutGatewayStats) and
// summed (store.GatewayLoad); this is the gateway's side of that one
// typed path.
type ControlPlaneStatsSink struct {
	// Client reaches the API with a token that may write stats.
	Client *client.Client
	// Gateway names this gateway instance; windows are kept per name.
	Gateway string
	// MetricsURL, when set, is sent with every window: where the
	// gateway's metrics are scraped, for discovery.
	MetricsURL string
	// Log receives failures; nil discards them.
	Log *slog.Logger
	// Clock stamps the windows and times out their sends; nil means the
	// wall clock. The control plane stamps reports again on arrival, with
	// its own clock, to judge their age.
	Clock clock.Clock
}

var _ StatsSink = (*ControlPlaneStatsSink)(nil)

// ReportStats implements StatsSink. It sends even an empty window, so the
// autoscaler can tell an idle gateway from a silent one. A failed send is
// dropped: the next window carries fresh numbers.
func (s *ControlPlaneStatsSink) ReportStats(stats []RevisionStats) {
	clk := clock.Or(s.Clock)
	body := api.GatewayStats{Gateway: s.Gateway, At: clk.Now().UTC(), Revisions: make([]api.RevisionLoad, 0, len(stats)), MetricsURL: s.MetricsURL}
	for _, st := range stats {
		body.Window = api.Duration{Duration: st.Window}
		l := api.RevisionLoad{
			Namespace: st.Namespace, Function: st.Function, Revision: st.Revision,
			Concurrency: st.AverageConcurrency, Requests: st.Requests, InFlight: st.InFlight, Queued: st.QueueLength,
		}
		if st.Outcomes.Requests > 0 {
			o := st.Outcomes
			l.Outcomes = &o
		}
		body.Revisions = append(body.Revisions, l)
	}
	ctx, cancel := clock.WithTimeout(context.Background(), clk, statsSendTimeout)
	defer cancel()
	if err := s.Client.Do(ctx, http.MethodPost, "/v1/stats", &body, nil); err != nil && s.Log != nil {
		s.Log.Debug("report stats", "gateway", s.Gateway, "err", err)
	}
}
