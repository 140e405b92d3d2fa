package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// ControlPlaneStatsSink sends each stats window to the control plane,
// where the autoscaler leader sums the windows of every gateway.
type ControlPlaneStatsSink struct {
	// Client reaches the API with a token that may write stats.
	Client *client.Client
	// Gateway names this gateway instance; windows are kept per name.
	Gateway string
	// Log receives failures; nil discards them.
	Log *slog.Logger
	// Now stamps the windows; nil means time.Now.
	Now func() time.Time
}

var _ StatsSink = (*ControlPlaneStatsSink)(nil)

// ReportStats implements StatsSink. It sends even an empty window, so the
// autoscaler can tell an idle gateway from a silent one. A failed send is
// dropped: the next window carries fresh numbers.
func (s *ControlPlaneStatsSink) ReportStats(stats []RevisionStats) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	body := api.GatewayStats{Gateway: s.Gateway, At: now().UTC(), Revisions: make([]api.RevisionLoad, 0, len(stats))}
	for _, st := range stats {
		body.Window = st.Window.String()
		body.Revisions = append(body.Revisions, api.RevisionLoad{
			Namespace: st.Namespace, Function: st.Function, Revision: st.Revision,
			Concurrency: st.AverageConcurrency, Requests: st.Requests, InFlight: st.InFlight, Queued: st.QueueLength,
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Client.Do(ctx, http.MethodPost, "/v1/stats", &body, nil); err != nil && s.Log != nil {
		s.Log.Debug("report stats", "err", err)
	}
}
