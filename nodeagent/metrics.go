package nodeagent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the agent's metrics on reg (none when reg is
// nil) and returns what unregisters them: the number of replicas it
// supervises, read when scraped.
func registerMetrics(reg prometheus.Registerer, a *Agent) (unregister func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	supervised := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "surge",
		Subsystem: "nodeagent",
		Name:      "replicas",
		Help:      "Replicas bound to this node that the agent supervises.",
	}, func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return float64(len(a.supervisors))
	})
	if err := reg.Register(supervised); err != nil {
		return nil, fmt.Errorf("register node agent metrics: %w", err)
	}
	return func() { reg.Unregister(supervised) }, nil
}
