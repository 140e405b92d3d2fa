package controlplane

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

func TestMetricsTargets(t *testing.T) {
	servers := []api.ServerInfo{
		{Name: "a", MetricsURL: "https://10.0.0.1:7070/metrics"},
		{Name: "up", MetricsURL: "http://127.0.0.1:7074/metrics"},
		{Name: "broken", MetricsURL: "::not a url"},
	}
	nodes := []api.Node{
		{Metadata: api.ObjectMeta{Name: "n1"}, Status: api.NodeStatus{State: api.NodeAlive, MetricsURL: "http://10.0.0.2:7074/metrics"}},
		{Metadata: api.ObjectMeta{Name: "up"}, Status: api.NodeStatus{State: api.NodeAlive, MetricsURL: "http://127.0.0.1:7074/metrics"}},
		{Metadata: api.ObjectMeta{Name: "gone"}, Status: api.NodeStatus{State: api.NodeDead, MetricsURL: "http://10.0.0.3:7074/metrics"}},
		{Metadata: api.ObjectMeta{Name: "silent"}, Status: api.NodeStatus{State: api.NodeAlive}},
	}
	gateways := []store.GatewayMetrics{{Gateway: "gw1", URL: "http://10.0.0.4:7075/metrics"}, {Gateway: "up", URL: "http://127.0.0.1:7074/metrics"}}
	want := []api.TargetGroup{
		{Targets: []string{"10.0.0.2:7074"}, Labels: map[string]string{"__scheme__": "http", "__metrics_path__": "/metrics", "surge_role": "agent", "surge_node": "n1"}},
		{Targets: []string{"10.0.0.4:7075"}, Labels: map[string]string{"__scheme__": "http", "__metrics_path__": "/metrics", "surge_role": "gateway", "surge_gateway": "gw1"}},
		// surge up: one address, one target, every role's name.
		{Targets: []string{"127.0.0.1:7074"}, Labels: map[string]string{"__scheme__": "http", "__metrics_path__": "/metrics",
			"surge_role": "agent,gateway,server", "surge_server": "up", "surge_node": "up", "surge_gateway": "up"}},
		{Targets: []string{"10.0.0.1:7070"}, Labels: map[string]string{"__scheme__": "https", "__metrics_path__": "/metrics", "surge_role": "server", "surge_server": "a"}},
	}
	if diff := cmp.Diff(want, metricsTargets(servers, nodes, gateways)); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
}
