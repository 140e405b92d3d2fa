package controlplane

import (
	"context"
	"time"

	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/controlplane/store"
)

// statsExpiry is how long a gateway's last load report is kept after it
// was made; statsExpiryInterval how often the leader looks. A report
// stops counting much sooner (Autoscaling.StatsMaxAge): this only bounds
// what etcd keeps of gateways that stopped, or of names a gateway token
// made up.
const (
	statsExpiry         = time.Minute
	statsExpiryInterval = 30 * time.Second
)

// expireStats is the leader's task that deletes the gateways' old load
// reports.
func (s *Server) expireStats(st *store.Store) controllers.LeaderTask {
	return func(ctx context.Context) error {
		t := s.clock.NewTicker(statsExpiryInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.Chan():
			}
			n, err := st.ExpireGatewayStats(ctx, s.clock.Now().Add(-statsExpiry))
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("expire gateways' load reports", "err", err)
			case n > 0:
				s.log.Info("expired gateways' load reports", "reports", n)
			}
		}
	}
}
