package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the gateway's Prometheus instruments. Label values are
// bounded by the deployed revisions (series are deleted when a revision
// goes) and by the HTTP status codes; requests that match no function are
// counted without function labels, so a scan of random hosts cannot grow
// the series.
type metrics struct {
	requests      *prometheus.CounterVec   // namespace, function, revision, code
	unrouted      *prometheus.CounterVec   // code
	duration      *prometheus.HistogramVec // namespace, function, revision
	inflight      *prometheus.GaugeVec     // namespace, function, revision
	queue         *prometheus.GaugeVec     // namespace, function, revision
	connectErrors *prometheus.CounterVec   // namespace, function, revision
	retries       *prometheus.CounterVec   // namespace, function, revision
	ejections     *prometheus.CounterVec   // namespace, function, revision
}

var revLabels = []string{"namespace", "function", "revision"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_requests_total",
			Help: "Requests routed to a revision, by answer status code.",
		}, append(revLabels[:3:3], "code")),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_unrouted_requests_total",
			Help: "Requests that matched no function or revision, or were rejected before routing, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_gateway_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, queueing included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, revLabels),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_gateway_inflight_requests",
			Help: "Requests of a revision in the gateway now, queued ones included.",
		}, revLabels),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_gateway_queue_depth",
			Help: "Requests waiting for a replica with room.",
		}, revLabels),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_upstream_connect_errors_total",
			Help: "Failed connections to replicas.",
		}, revLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_retries_total",
			Help: "Requests sent again to another replica after a safe failure.",
		}, revLabels),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_ejections_total",
			Help: "Replicas ejected from balancing after consecutive connect failures.",
		}, revLabels),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.unrouted, m.duration, m.inflight, m.queue, m.connectErrors, m.retries, m.ejections} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register gateway metrics: %w", err)
	}
	return m, nil
}

// revMetrics is one revision's instruments, resolved once so that the
// request path does no label lookup (which hashes and read-locks).
type revMetrics struct {
	parent        *metrics
	labels        [3]string
	duration      prometheus.Observer
	inflight      prometheus.Gauge
	queue         prometheus.Gauge
	connectErrors prometheus.Counter
	retries       prometheus.Counter
	ejections     prometheus.Counter
	// codes caches the request counter per status code, filled on first use.
	codes [600]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

func (m *metrics) forRevision(r *revision) *revMetrics {
	l := [3]string{r.key.Namespace, r.function, r.key.Name}
	return &revMetrics{
		parent:        m,
		labels:        l,
		duration:      m.duration.WithLabelValues(l[:]...),
		inflight:      m.inflight.WithLabelValues(l[:]...),
		queue:         m.queue.WithLabelValues(l[:]...),
		connectErrors: m.connectErrors.WithLabelValues(l[:]...),
		retries:       m.retries.WithLabelValues(l[:]...),
		ejections:     m.ejections.WithLabelValues(l[:]...),
	}
}

// forget deletes a gone revision's series.
func (m *metrics) forget(r *revision) {
	l := prometheus.Labels{"namespace": r.key.Namespace, "function": r.function, "revision": r.key.Name}
	m.requests.DeletePartialMatch(l)
	m.duration.Delete(l)
	m.inflight.Delete(l)
	m.queue.Delete(l)
	m.connectErrors.Delete(l)
	m.retries.Delete(l)
	m.ejections.Delete(l)
}

func (rm *revMetrics) code(code int) prometheus.Counter {
	if code < 100 || code >= len(rm.codes) {
		code = 0 // not a valid status: counted under "0"
	}
	if p := rm.codes[code].Load(); p != nil {
		return p.c
	}
	c := rm.parent.requests.WithLabelValues(rm.labels[0], rm.labels[1], rm.labels[2], strconv.Itoa(code))
	rm.codes[code].Store(&counterRef{c})
	return c
}
