package gateway

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the gateway's Prometheus instruments. Label values are
// bounded by the deployed revisions (series are deleted when a revision
// goes, and a function's when its last revision goes) and by the status
// code classes; requests that match no function are counted without
// function labels, so a scan of random hosts cannot grow the series.
type metrics struct {
	requests      *prometheus.CounterVec   // namespace, function, revision, code_class
	unrouted      *prometheus.CounterVec   // code
	duration      *prometheus.HistogramVec // namespace, function, revision
	inflight      *prometheus.GaugeVec     // namespace, function, revision
	queue         *prometheus.GaugeVec     // namespace, function, revision
	queueWait     *prometheus.HistogramVec // namespace, function, revision
	connectErrors *prometheus.CounterVec   // namespace, function, revision
	retries       *prometheus.CounterVec   // namespace, function, revision
	ejections     *prometheus.CounterVec   // namespace, function, revision
	queueFull     *prometheus.CounterVec   // namespace, function, revision, bound
	activations   *prometheus.CounterVec   // namespace, function, revision
	coldStarts    *prometheus.HistogramVec // namespace, function
	accessDropped prometheus.Counter

	mu        sync.Mutex
	functions map[[2]string]int // revisions with series, per function
}

var revLabels = []string{"namespace", "function", "revision"}

// codeClasses are the values of the code_class label, by status/100;
// "other" for what is not an HTTP status.
var codeClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// waitBuckets are for waits for a replica: a slot frees within
// milliseconds, a cold start takes from a fraction of a second to tens of
// seconds (an image pull).
var waitBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_requests_total",
			Help: "Requests routed to a revision, by the class of their answer's status (2xx, 5xx…).",
		}, append(revLabels[:3:3], "code_class")),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_unrouted_requests_total",
			Help: "Requests that matched no function or revision, or were rejected before routing, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_gateway_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, queueing included.",
			Buckets: waitBuckets,
		}, revLabels),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_gateway_inflight_requests",
			Help: "Requests of a revision in the gateway now, queued ones included.",
		}, revLabels),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_gateway_queue_depth",
			Help: "Requests waiting for a replica with room.",
		}, revLabels),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_gateway_queue_wait_seconds",
			Help:    "How long requests that found no replica with room waited for one (or gave up).",
			Buckets: waitBuckets,
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
			Help: "Replicas ejected from balancing after consecutive failures.",
		}, revLabels),
		queueFull: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_queue_rejections_total",
			Help: "Requests answered 503 because a queue was full, by the bound reached: the revision's queue depth, or the gateway's room for waiting requests.",
		}, append(revLabels[:3:3], "bound")),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_activations_total",
			Help: "Asks to the control plane for replicas of a revision whose requests found none with room.",
		}, revLabels),
		coldStarts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_cold_start_seconds",
			Help:    "Cold starts seen by this gateway: from the first request queued for a revision with no replica to its answer.",
			Buckets: waitBuckets,
		}, []string{"namespace", "function"}),
		accessDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_gateway_access_log_dropped_total",
			Help: "Access log records dropped because the log's writer fell behind.",
		}),
		functions: map[[2]string]int{},
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.unrouted, m.duration, m.inflight, m.queue, m.queueWait,
		m.connectErrors, m.retries, m.ejections, m.queueFull, m.activations, m.coldStarts, m.accessDropped} {
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
	duration      prometheus.Observer
	inflight      prometheus.Gauge
	queue         prometheus.Gauge
	queueWait     prometheus.Observer
	connectErrors prometheus.Counter
	retries       prometheus.Counter
	ejections     prometheus.Counter
	coldStart     prometheus.Observer
	activations   prometheus.Counter
	queueFull     [2]prometheus.Counter // queueFullRevision, queueFullGateway
	// codes is the request counter per code class (codeClasses).
	codes [len(codeClasses)]prometheus.Counter
}

func (m *metrics) forRevision(r *revision) *revMetrics {
	l := [3]string{r.key.Namespace, r.function, r.key.Name}
	rm := &revMetrics{
		duration:      m.duration.WithLabelValues(l[:]...),
		inflight:      m.inflight.WithLabelValues(l[:]...),
		queue:         m.queue.WithLabelValues(l[:]...),
		queueWait:     m.queueWait.WithLabelValues(l[:]...),
		connectErrors: m.connectErrors.WithLabelValues(l[:]...),
		retries:       m.retries.WithLabelValues(l[:]...),
		ejections:     m.ejections.WithLabelValues(l[:]...),
		coldStart:     m.coldStarts.WithLabelValues(l[0], l[1]),
		activations:   m.activations.WithLabelValues(l[:]...),
	}
	rm.queueFull[queueFullRevision] = m.queueFull.WithLabelValues(l[0], l[1], l[2], "revision")
	rm.queueFull[queueFullGateway] = m.queueFull.WithLabelValues(l[0], l[1], l[2], "gateway")
	for i, class := range codeClasses {
		rm.codes[i] = m.requests.WithLabelValues(l[0], l[1], l[2], class)
	}
	m.mu.Lock()
	m.functions[[2]string{l[0], l[1]}]++
	m.mu.Unlock()
	return rm
}

// forget deletes a gone revision's series, and its function's once no
// revision of it is left.
func (m *metrics) forget(r *revision) {
	l := prometheus.Labels{"namespace": r.key.Namespace, "function": r.function, "revision": r.key.Name}
	m.requests.DeletePartialMatch(l)
	m.queueFull.DeletePartialMatch(l)
	for _, v := range []interface{ Delete(prometheus.Labels) bool }{m.duration, m.inflight, m.queue, m.queueWait,
		m.connectErrors, m.retries, m.ejections, m.activations} {
		v.Delete(l)
	}
	fn := [2]string{r.key.Namespace, r.function}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.functions[fn]--; m.functions[fn] <= 0 {
		delete(m.functions, fn)
		m.coldStarts.DeleteLabelValues(fn[0], fn[1])
	}
}

// The bounds of surge_gateway_queue_rejections_total.
const (
	queueFullRevision = iota
	queueFullGateway
)

// registerParking registers gauges of the client connections p holds, and
// how many are parked, read when scraped.
func registerParking(reg prometheus.Registerer, p *parking) error {
	count := func(parked bool) func() float64 {
		return func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			if parked {
				return float64(len(p.parked))
			}
			return float64(len(p.conns))
		}
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "surge_gateway_client_connections",
			Help: "Client connections open (the parking counts them)."}, count(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "surge_gateway_parked_connections",
			Help: "Idle keep-alive client connections parked: watched by one poller, with no goroutine or buffer of their own."}, count(true)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "surge_gateway_connection_parks_total",
			Help: "Idle client connections parked."}, func() float64 { return float64(p.parks.Load()) }),
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register gateway metrics: %w", err)
	}
	return nil
}

// code is the request counter of a status code's class.
func (rm *revMetrics) code(code int) prometheus.Counter {
	c := code / 100
	if c < 1 || c >= len(codeClasses) {
		c = 0
	}
	return rm.codes[c]
}
