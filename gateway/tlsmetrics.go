package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// tlsMetrics is the HTTPS side's instruments: when each certificate
// served expires (to alert on before it does), the certificates that
// could not be loaded or issued, and the handshakes, resumed or not (a
// rate of full handshakes far above new clients' says resumption is not
// working). The certificate label is a file's path or "issued:NAMESPACE"
// ("issued:" for the domain's): bounded by the files an operator gives and
// the namespaces with functions.
type tlsMetrics struct {
	notAfter   *prometheus.GaugeVec   // certificate
	errors     prometheus.Counter     //
	handshakes *prometheus.CounterVec // resumed
}

func newTLSMetrics(reg prometheus.Registerer) (*tlsMetrics, error) {
	m := &tlsMetrics{
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "surge_gateway_tls_certificate_expiry_timestamp_seconds",
			Help: "When each certificate the gateway serves expires (its NotAfter), in Unix seconds.",
		}, []string{"certificate"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_gateway_tls_certificate_errors_total",
			Help: "Certificate files that did not load (once per version of the files) and certificates that could not be issued; the one loaded before goes on serving.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_gateway_tls_handshakes_total",
			Help: "TLS handshakes completed, by whether they resumed a session.",
		}, []string{"resumed"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.notAfter, m.errors, m.handshakes} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register gateway TLS metrics: %w", err)
	}
	return m, nil
}

// handshake is the TLS configuration's VerifyConnection: it counts the
// handshake, and never fails it.
func (m *tlsMetrics) handshake(cs tls.ConnectionState) error {
	if cs.DidResume {
		m.handshakes.WithLabelValues("true").Inc()
	} else {
		m.handshakes.WithLabelValues("false").Inc()
	}
	return nil
}
