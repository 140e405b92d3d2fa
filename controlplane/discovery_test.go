package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

// TestDiscoveryListsEveryRolesMetrics: GET /v1/sd/prometheus lists the
// server's API, a node's metrics endpoint (a wildcard host made the node's
// address) and a gateway's (made the address its report came from); a
// metrics URL that points elsewhere is refused.
func TestDiscoveryListsEveryRolesMetrics(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	n := &api.Node{Metadata: api.ObjectMeta{Name: "n1"}, Status: api.NodeStatus{State: api.NodeAlive, Address: "10.0.0.9",
		LastSeen: time.Now(), Allocatable: api.NodeResources{CPU: "1", Memory: "1Gi"}, MetricsURL: "http://0.0.0.0:7074/metrics"}}
	var out api.Node
	if err := c.Do(ctx, "POST", client.CollectionPath[api.Node](""), n, &out); err != nil {
		t.Fatal(err)
	}
	if out.Status.MetricsURL != "http://10.0.0.9:7074/metrics" {
		t.Errorf("the node's metrics URL is %q, want its wildcard made its address", out.Status.MetricsURL)
	}
	bad := *n
	bad.Metadata.Name, bad.Status.MetricsURL = "n2", "http://169.254.169.254:80/metrics"
	var ae *api.Error
	if err := c.Do(ctx, "POST", client.CollectionPath[api.Node](""), &bad, nil); !errors.As(err, &ae) || ae.Code != http.StatusUnprocessableEntity {
		t.Errorf("a node pointing scrapers at another address: %v, want 422", err)
	}

	gw := in.ClientWithToken(in.Server().GatewayToken())
	report := api.GatewayStats{Gateway: "gw-1", Revisions: []api.RevisionLoad{}, MetricsURL: "http://0.0.0.0:7075/metrics"}
	if err := gw.Do(ctx, "POST", "/v1/stats", &report, nil); err != nil {
		t.Fatal(err)
	}
	report.Gateway, report.MetricsURL = "gw-2", "http://10.1.2.3:7075/metrics"
	if err := gw.Do(ctx, "POST", "/v1/stats", &report, nil); !errors.As(err, &ae) || ae.Code != http.StatusUnprocessableEntity {
		t.Errorf("a gateway pointing scrapers at another address: %v, want 422", err)
	}

	var groups []api.TargetGroup
	if err := c.Do(ctx, "GET", "/v1/sd/prometheus", nil, &groups); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range groups {
		got[g.Labels["surge_role"]] = g.Labels["__scheme__"] + "://" + strings.Join(g.Targets, ",") + g.Labels["__metrics_path__"]
	}
	for role, want := range map[string]string{
		"server":  in.URL() + "/metrics",
		"agent":   "http://10.0.0.9:7074/metrics",
		"gateway": "http://127.0.0.1:7075/metrics",
	} {
		if got[role] != want {
			t.Errorf("discovery lists %s at %q, want %q (all: %v)", role, got[role], want, groups)
		}
	}
	if len(groups) != 3 {
		t.Errorf("discovery lists %d targets, want 3: %v", len(groups), groups)
	}

	// What the API serves at /metrics passes Prometheus' linter.
	body, err := c.Open(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, body); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"surge_apiserver_requests_total", "surge_etcd_request_duration_seconds",
		"surge_controllers_leader", "surge_scheduler_placements_total", "surge_autoscaler_decisions_total", "surge_build_info", "go_goroutines"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	telemetrytest.CheckText(t, "the API's /metrics", []byte(b.String()))
}
