package autoscaling

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
)

// metrics are the autoscaler's, per revision. Revisions come and go; their
// series are deleted with them, so the label sets stay bounded by what is
// deployed. They describe the leader's decisions: a server that stops
// leading clears them (reset), so that only the leader reports a
// revision's desired scale.
type metrics struct {
	desired, ready, panic, concurrency, rps *prometheus.GaugeVec
	decisions                               *prometheus.CounterVec // reason
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"namespace", "function", "revision"}
	g := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "surge_autoscaler_" + name, Help: help}, labels)
	}
	m := &metrics{
		desired:     g("desired_replicas", "Replicas the autoscaler wants per revision."),
		ready:       g("ready_replicas", "Ready replicas per revision, as the autoscaler saw them."),
		panic:       g("panic_mode", "1 while the revision's autoscaler is in panic mode."),
		concurrency: g("observed_concurrency", "Requests in flight per revision, summed over gateways."),
		rps:         g("observed_requests_per_second", "Requests per second per revision, summed over gateways."),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_autoscaler_decisions_total",
			Help: "Decisions on a revision's scale, one per revision per tick, by the rule that set it.",
		}, []string{"reason"}),
	}
	for r := autoscaler.ReasonStable; r <= autoscaler.ReasonNoTraffic; r++ {
		m.decisions.WithLabelValues(reasonLabel(r)) // present at 0, for rate()
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.desired, m.ready, m.panic, m.concurrency, m.rps, m.decisions} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register autoscaler metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) observe(ns, fn, rev string, desired, ready int32, panicking bool, concurrency, rps float64, reason autoscaler.Reason) {
	m.desired.WithLabelValues(ns, fn, rev).Set(float64(desired))
	m.ready.WithLabelValues(ns, fn, rev).Set(float64(ready))
	p := 0.0
	if panicking {
		p = 1
	}
	m.panic.WithLabelValues(ns, fn, rev).Set(p)
	m.concurrency.WithLabelValues(ns, fn, rev).Set(concurrency)
	m.rps.WithLabelValues(ns, fn, rev).Set(rps)
	m.decisions.WithLabelValues(reasonLabel(reason)).Inc()
}

// reasonLabel is a reason as a label value: its name, with dashes for
// spaces ("initial-scale").
func reasonLabel(r autoscaler.Reason) string { return strings.ReplaceAll(r.String(), " ", "-") }

// forget deletes a revision's series.
func (m *metrics) forget(k api.Key) {
	match := prometheus.Labels{"namespace": k.Namespace, "revision": k.Name}
	for _, v := range m.gauges() {
		v.DeletePartialMatch(match)
	}
}

// reset deletes every revision's series: this server no longer decides.
// The decisions counter stays, as counters do.
func (m *metrics) reset() {
	for _, v := range m.gauges() {
		v.Reset()
	}
}

func (m *metrics) gauges() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.desired, m.ready, m.panic, m.concurrency, m.rps}
}
