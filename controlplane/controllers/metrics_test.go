package controllers

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
)

func TestMetricsPassPromtool(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.leader.Set(1)
	m.placementDuration.Observe(0.001)
	m.passDuration.Observe(0.01)
	telemetrytest.Check(t, "the controllers' registry", reg, "surge_controllers_leader", "surge_controllers_pass_duration_seconds",
		"surge_controllers_errors_total", "surge_controllers_replica_writes_total", "surge_scheduler_placements_total",
		"surge_scheduler_placement_failures_total", "surge_scheduler_placement_duration_seconds")
	if _, err := newMetrics(reg); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}
