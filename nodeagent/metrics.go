package nodeagent

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/nodeagent/containers"
)

// metrics are the node agent's: its replicas by phase, their starts by
// stage, restarts, and each running replica's CPU and memory from its
// cgroup. Per-replica series exist while the agent supervises the replica:
// they are computed at each scrape from the supervisors (a Collector), so
// a replica that goes takes its series along, and nothing is read from
// cgroups between scrapes.
type metrics struct {
	starts   *prometheus.HistogramVec // stage: pull, create, start, ready, total
	restarts prometheus.Counter
	failed   prometheus.Counter
}

// Start stages, the values of the stage label.
const (
	stagePull   = "pull"
	stageCreate = "create"
	stageStart  = "start"
	stageReady  = "ready"
	stageTotal  = "total"
)

func newMetrics() *metrics {
	m := &metrics{
		starts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_nodeagent_replica_start_duration_seconds",
			Help:    "Replica starts by stage: pull (the image), create (container, task, network), start (the process), ready (until its probe passes), and total.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"stage"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_nodeagent_replica_restarts_total",
			Help: "Replica containers restarted in place after they ended.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_nodeagent_replica_start_failures_total",
			Help: "Replica starts that failed (the image, the container, or no readiness in time).",
		}),
	}
	for _, s := range []string{stagePull, stageCreate, stageStart, stageReady, stageTotal} {
		m.starts.WithLabelValues(s)
	}
	return m
}

// started records a start's stages.
func (m *metrics) started(pull, create, start, ready time.Duration) {
	m.starts.WithLabelValues(stagePull).Observe(pull.Seconds())
	m.starts.WithLabelValues(stageCreate).Observe(create.Seconds())
	m.starts.WithLabelValues(stageStart).Observe(start.Seconds())
	m.starts.WithLabelValues(stageReady).Observe(ready.Seconds())
	m.starts.WithLabelValues(stageTotal).Observe((pull + create + start + ready).Seconds())
}

// usageReader is implemented by runtimes that read replicas' cgroups
// (containers.Runtime). Usage may be called from any goroutine and reads
// files only.
type usageReader interface {
	Usage(id string) (containers.Usage, error)
}

var _ usageReader = (*containers.Runtime)(nil)

// phases are the phases the replicas gauge reports, each always present.
var phases = []api.ReplicaPhase{api.ReplicaPending, api.ReplicaStarting, api.ReplicaReady, api.ReplicaTerminating, api.ReplicaFailed}

var (
	replicasDesc = prometheus.NewDesc("surge_nodeagent_replicas",
		"Replicas bound to this node that the agent supervises, by phase.", []string{"phase"}, nil)
	replicaLabels = []string{"namespace", "function", "revision", "replica"}
	cpuDesc       = prometheus.NewDesc("surge_nodeagent_replica_cpu_seconds_total",
		"CPU time a running replica's processes used, from its cgroup.", replicaLabels, nil)
	memoryDesc = prometheus.NewDesc("surge_nodeagent_replica_memory_bytes",
		"Memory a running replica uses now, page cache included, from its cgroup.", replicaLabels, nil)
)

// agentCollector reports what an agent supervises at each scrape.
type agentCollector struct{ a *Agent }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicasDesc
	ch <- cpuDesc
	ch <- memoryDesc
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	count := make(map[api.ReplicaPhase]int, len(phases))
	type running struct {
		labels []string
		id     string
	}
	var rs []running
	for _, s := range a.supervisors {
		p := s.currentPhase()
		count[p]++
		if p == api.ReplicaReady || p == api.ReplicaStarting {
			r := s.replica
			rs = append(rs, running{labels: []string{r.Metadata.Namespace, r.Spec.Function, r.Spec.Revision, r.Metadata.Name}, id: r.Metadata.Name})
		}
	}
	rt := a.runtime
	a.mu.Unlock()
	for _, p := range phases {
		ch <- prometheus.MustNewConstMetric(replicasDesc, prometheus.GaugeValue, float64(count[p]), string(p))
	}
	ur, ok := rt.(usageReader)
	if !ok {
		return
	}
	for _, r := range rs {
		u, err := ur.Usage(r.id)
		if err != nil {
			continue // between its start and its cgroup, or just gone
		}
		ch <- prometheus.MustNewConstMetric(cpuDesc, prometheus.CounterValue, u.CPUSeconds, r.labels...)
		ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(u.MemoryBytes), r.labels...)
	}
}

// registerMetrics registers the agent's metrics on reg (none when reg is
// nil) and returns what unregisters them.
func registerMetrics(reg prometheus.Registerer, a *Agent) (unregister func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	cs := []prometheus.Collector{agentCollector{a}, a.metrics.starts, a.metrics.restarts, a.metrics.failed}
	var errs []error
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
			cs[i] = nil
		}
	}
	unregister = func() {
		for _, c := range cs {
			if c != nil {
				reg.Unregister(c)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		unregister()
		return nil, fmt.Errorf("register node agent metrics: %w", err)
	}
	return unregister, nil
}
