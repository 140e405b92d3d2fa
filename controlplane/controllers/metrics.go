package controllers

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controllers' and the scheduler's. Every label takes a
// fixed set of values.
type metrics struct {
	leader       prometheus.Gauge
	passDuration prometheus.Histogram
	passErrors   *prometheus.CounterVec // controller
	replicas     *prometheus.CounterVec // action: created, deleted
	nodesDead    prometheus.Counter
	rollouts     prometheus.Counter

	placements        prometheus.Counter
	placementFailures *prometheus.CounterVec // reason: unschedulable, conflict, error
	placementDuration prometheus.Histogram
}

// controller names, the values of the controller label.
const (
	ctrlNodes     = "nodes"
	ctrlReplicas  = "replicas"
	ctrlScheduler = "scheduler"
	ctrlStatuses  = "statuses"
	ctrlRollouts  = "rollouts"
	ctrlPrune     = "prune"
)

// newMetrics registers the metrics on reg; nil registers them nowhere (the
// counters still count, for tests).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_controllers_leader",
			Help: "1 while this server leads: runs the controllers, the scheduler and the autoscaler.",
		}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "surge_controllers_pass_duration_seconds",
			Help:    "One pass of every controller over the cluster, writes included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		passErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_controllers_errors_total",
			Help: "Passes of a controller that failed (retried at the next pass), by controller.",
		}, []string{"controller"}),
		replicas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_controllers_replica_writes_total",
			Help: "Replicas the replica controller made or deleted, by action.",
		}, []string{"action"}),
		nodesDead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_controllers_nodes_declared_dead_total",
			Help: "Nodes the node controller declared dead.",
		}),
		rollouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_controllers_rollouts_total",
			Help: "Traffic moved to a function's latest revision once it had a Ready replica.",
		}),
		placements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_scheduler_placements_total",
			Help: "Replicas bound to a node, at creation or by the scheduler.",
		}),
		placementFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_scheduler_placement_failures_total",
			Help: "Placements that failed, by reason: unschedulable (no node fits), conflict (the node or replica changed first), error.",
		}, []string{"reason"}),
		placementDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "surge_scheduler_placement_duration_seconds",
			Help:    "From the start of a placement to its binding written to etcd.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
	}
	for _, c := range []string{ctrlNodes, ctrlReplicas, ctrlScheduler, ctrlStatuses, ctrlRollouts, ctrlPrune} {
		m.passErrors.WithLabelValues(c) // present at 0, so that rate() sees the first error
	}
	for _, a := range []string{"created", "deleted"} {
		m.replicas.WithLabelValues(a)
	}
	for _, r := range []string{"unschedulable", "conflict", "error"} {
		m.placementFailures.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.leader, m.passDuration, m.passErrors, m.replicas, m.nodesDead, m.rollouts,
		m.placements, m.placementFailures, m.placementDuration} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register controller metrics: %w", err)
	}
	return m, nil
}

// countErr counts a controller's failed pass.
func (m *metrics) countErr(controller string, err error) error {
	if err != nil {
		m.passErrors.WithLabelValues(controller).Inc()
	}
	return err
}

// placed counts a replica bound to a node d after its placement began.
func (m *metrics) placed(d time.Duration) {
	m.placements.Inc()
	m.placementDuration.Observe(d.Seconds())
}
