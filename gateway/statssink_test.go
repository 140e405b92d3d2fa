package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

func TestControlPlaneStatsSinkReachesTheAutoscaler(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	sink := &ControlPlaneStatsSink{Client: in.ClientWithToken(in.Server().GatewayToken()), Gateway: "gw-1", Clock: clock.NewFake()}
	outcomes := api.Outcomes{Requests: 9, Errors: 2, Latency: []int64{0, 3, 0, 6}}
	sink.ReportStats([]RevisionStats{{Namespace: "default", Function: "hello", Revision: "hello-00001",
		Window: 2 * time.Second, AverageConcurrency: 1.5, Requests: 4, InFlight: 1, Outcomes: outcomes}})

	// The server stamps the report on arrival with its wall clock.
	got, err := store.NewGatewayLoad(in.Store(), time.Minute).Load(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := map[api.Key]autoscaler.Load{
		{Namespace: "default", Name: "hello-00001"}: {Sample: autoscaler.Sample{Concurrency: 1.5, Requests: 4}, RPS: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the autoscaler's load after one report (-want +got):\n%s", diff)
	}
	// The rollout controller reads the outcomes, by gateway.
	byGateway, err := store.NewGatewayLoad(in.Store(), time.Minute).Outcomes(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var seen []api.Outcomes
	for _, revs := range byGateway {
		seen = append(seen, revs[api.Key{Namespace: "default", Name: "hello-00001"}])
	}
	if diff := cmp.Diff([]api.Outcomes{outcomes}, seen); diff != "" {
		t.Errorf("the outcomes the rollout controller reads (-want +got):\n%s", diff)
	}
}
