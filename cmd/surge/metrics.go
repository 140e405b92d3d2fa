package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/internal/telemetry"
)

// Where each role serves its metrics by default: on loopback, where no
// token is asked (nothing listens unauthenticated on the network but
// health endpoints), each on its own port so that an agent and a gateway
// on one machine do not clash; surge up serves every role's at the
// agent's. 9090 is Prometheus' own.
const (
	defaultAgentMetricsAddr   = "127.0.0.1:7074"
	defaultGatewayMetricsAddr = "127.0.0.1:7075"
)

// tokenCheckTTL is how long a metrics endpoint off loopback trusts a
// scraper's token once the API vouched for it: a scrape every 15s costs
// the API a check per scrape at most, and a revoked token reads metrics
// for 10s more at most.
const tokenCheckTTL = 10 * time.Second

func addMetricsFlag(c *cobra.Command, addr *string, def string) {
	c.Flags().StringVar(addr, "metrics-addr", def,
		"where /metrics is served (HOST:PORT; \"\" for nowhere): open on loopback, elsewhere only to a token that may read metrics (surge token create --role metrics)")
}

// metricsEndpoint is a process's metrics listener, bound: what it serves,
// and the URL it is advertised at for discovery ("" when scrapers
// elsewhere could not reach it).
type metricsEndpoint struct {
	e     telemetry.Endpoint
	ln    net.Listener
	url   string
	close func()
}

// listenMetrics binds addr to serve g; nil for addr "". Off loopback, a
// scrape needs a token that the API (apiCfg's servers and CA) says may
// read metrics.
func listenMetrics(addr string, g prometheus.Gatherer, apiCfg client.Config) (*metricsEndpoint, error) {
	if addr == "" {
		return nil, nil
	}
	m := &metricsEndpoint{e: telemetry.Endpoint{Addr: addr, Gatherer: g}, close: func() {}}
	if !telemetry.IsLoopback(addr) {
		authz, closeAuthz, err := apiMetricsAuthorizer(apiCfg)
		if err != nil {
			return nil, err
		}
		m.e.Authorize, m.close = telemetry.CachedAuthorizer(authz, nil, tokenCheckTTL), closeAuthz
	}
	ln, err := m.e.Listen()
	if err != nil {
		m.close()
		return nil, err
	}
	m.ln, m.url = ln, advertisedMetricsURL(ln.Addr().String(), apiCfg.Server)
	return m, nil
}

// advertisedMetricsURL is the URL a role reports for discovery: the bound
// address, unless it is on loopback and the API is not (then no scraper
// that discovery serves reaches it).
func advertisedMetricsURL(bound, apiServer string) string {
	if telemetry.IsLoopback(bound) {
		u, err := url.Parse(apiServer)
		if err != nil || !telemetry.IsLoopback(u.Host) {
			return ""
		}
	}
	return telemetry.URL(bound)
}

// withMetrics runs run, and m's endpoint beside it until run returns (m
// may be nil); the first error of either ends both.
func withMetrics(ctx context.Context, m *metricsEndpoint, run func(ctx context.Context) error) error {
	if m == nil {
		return run(ctx)
	}
	defer m.close()
	g, gctx := errgroup.WithContext(ctx)
	mctx, stop := context.WithCancel(gctx)
	g.Go(func() error { return m.e.Serve(mctx, m.ln) })
	g.Go(func() error {
		defer stop()
		return run(gctx)
	})
	return g.Wait()
}

// apiMetricsAuthorizer checks a scraper's token by asking the API who it
// is (GET /v1/whoami, with that token) and whether that role may read
// metrics. The check's connections are apiCfg's (its servers and CA);
// close lets them go.
func apiMetricsAuthorizer(apiCfg client.Config) (telemetry.Authorizer, func(), error) {
	cfg := apiCfg.WithEndpoints(apiCfg.Endpoints())
	c, err := client.New(&cfg)
	if err != nil {
		return nil, nil, err
	}
	closeIdle := func() {
		if t, ok := c.Transport().(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
	return func(ctx context.Context, token string) error {
		var p auth.Principal
		err := c.WithToken(token).Do(ctx, http.MethodGet, "/v1/whoami", nil, &p)
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && (ae.Code == http.StatusUnauthorized || ae.Code == http.StatusForbidden):
			return telemetry.ErrForbidden
		case err != nil:
			return err
		case !auth.Allowed(p, auth.Read, auth.ResourceMetrics):
			return telemetry.ErrForbidden
		}
		return nil
	}, closeIdle, nil
}
