package autoscaling

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
)

// metrics are the autoscaler's, per revision. Revisions come and go; their
// series are deleted with them, so the label sets stay bounded by what is
// deployed.
type metrics struct {
	desired, ready, panic, concurrency, rps *prometheus.GaugeVec
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
		rps:         g("observed_rps", "Requests per second per revision, summed over gateways."),
	}
	for _, c := range []prometheus.Collector{m.desired, m.ready, m.panic, m.concurrency, m.rps} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register autoscaler metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(ns, fn, rev string, desired, ready int32, panicking bool, concurrency, rps float64) {
	m.desired.WithLabelValues(ns, fn, rev).Set(float64(desired))
	m.ready.WithLabelValues(ns, fn, rev).Set(float64(ready))
	p := 0.0
	if panicking {
		p = 1
	}
	m.panic.WithLabelValues(ns, fn, rev).Set(p)
	m.concurrency.WithLabelValues(ns, fn, rev).Set(concurrency)
	m.rps.WithLabelValues(ns, fn, rev).Set(rps)
}

// forget deletes a revision's series.
func (m *metrics) forget(k api.Key) {
	match := prometheus.Labels{"namespace": k.Namespace, "revision": k.Name}
	for _, v := range []*prometheus.GaugeVec{m.desired, m.ready, m.panic, m.concurrency, m.rps} {
		v.DeletePartialMatch(match)
	}
}
