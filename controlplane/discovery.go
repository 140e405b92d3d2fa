package controlplane

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// gatewayMetricsMaxAge is how long a gateway stays in discovery after its
// last report (they come every second): a stopped gateway leaves within a
// minute, and a slow API write does not make one flap.
const gatewayMetricsMaxAge = time.Minute

// discoveryRoute serves GET /v1/sd/prometheus: every server's, agent's and
// gateway's metrics endpoint in Prometheus' HTTP service discovery format
// (http_sd_configs), to a token that may read metrics.
func (s *Server) discoveryRoute(db *etcdConn, p *parts) apiserver.Route {
	return apiserver.Route{Pattern: "GET /v1/sd/prometheus", Resource: auth.ResourceDiscovery, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		servers, err := listServers(ctx, db.client)
		if err != nil {
			writeAPIError(w, s.log, unavailable("%v", err))
			return
		}
		nodes, _, err := store.List[api.Node](ctx, p.store, store.Scope{})
		if err != nil {
			writeAPIError(w, s.log, unavailable("%v", err))
			return
		}
		gateways, err := p.store.GatewayMetricsURLs(ctx, s.clock.Now(), gatewayMetricsMaxAge)
		if err != nil {
			writeAPIError(w, s.log, unavailable("%v", err))
			return
		}
		writeJSONBody(w, http.StatusOK, metricsTargets(servers, nodes, gateways))
	})}
}

// metricsTargets is discovery's answer: a target group per metrics
// endpoint, labelled with the roles it serves (surge_role) and their names
// (surge_server, surge_node, surge_gateway). An endpoint that serves
// several roles (surge up's one address) is one target, so that no series
// is scraped twice. Dead nodes are left out; groups are sorted by URL.
func metricsTargets(servers []api.ServerInfo, nodes []api.Node, gateways []store.GatewayMetrics) []api.TargetGroup {
	type endpoint struct {
		roles  []string
		labels map[string]string
	}
	byURL := map[string]*endpoint{}
	add := func(raw, role, nameLabel, name string) {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return
		}
		key := u.Scheme + "://" + u.Host + u.Path
		e := byURL[key]
		if e == nil {
			e = &endpoint{labels: map[string]string{"__scheme__": u.Scheme, "__metrics_path__": cmp.Or(u.Path, api.MetricsPath)}}
			byURL[key] = e
		}
		if !slices.Contains(e.roles, role) {
			e.roles = append(e.roles, role)
		}
		e.labels[nameLabel] = name
	}
	for _, s := range servers {
		add(s.MetricsURL, "server", "surge_server", s.Name)
	}
	for _, n := range nodes {
		if n.Status.State != api.NodeDead && n.Status.MetricsURL != "" {
			add(n.Status.MetricsURL, "agent", "surge_node", n.Metadata.Name)
		}
	}
	for _, g := range gateways {
		add(g.URL, "gateway", "surge_gateway", g.Gateway)
	}
	out := make([]api.TargetGroup, 0, len(byURL))
	for key, e := range byURL {
		slices.Sort(e.roles)
		e.labels["surge_role"] = strings.Join(e.roles, ",")
		u, _ := url.Parse(key)
		out = append(out, api.TargetGroup{Targets: []string{u.Host}, Labels: e.labels})
	}
	slices.SortFunc(out, func(a, b api.TargetGroup) int {
		return cmp.Or(strings.Compare(a.Labels["__scheme__"], b.Labels["__scheme__"]), strings.Compare(a.Targets[0], b.Targets[0]),
			strings.Compare(a.Labels["__metrics_path__"], b.Labels["__metrics_path__"]))
	})
	return out
}
