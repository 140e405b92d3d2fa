package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
)

// The gateways' load reports live under StatsPrefix, one key per reporting
// principal and gateway name, each overwritten every second: the
// autoscaler leader, on whichever server, sums the latest report of every
// gateway; a gateway that stops reporting ages out by its timestamp, and
// its key is deleted later (ExpireGatewayStats).
// This file is the only code that knows that layout and its JSON.

// statsKey is where a gateway's latest report lives. The principal is in
// the key so that one gateway token cannot overwrite another's reports.
func statsKey(principal, gateway string) string {
	return StatsPrefix + principal + "/" + gateway
}

// PutGatewayStats keeps st as the latest report of the gateway st names,
// sent by principal. st.At must be the receiving server's time, not the
// gateway's: it decides when the report is too old to count.
func (s *Store) PutGatewayStats(ctx context.Context, principal string, st *api.GatewayStats) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("put stats of gateway %s: %w", st.Gateway, err)
	}
	if _, err := s.c.Put(ctx, statsKey(principal, st.Gateway), string(b)); err != nil {
		return fmt.Errorf("put stats of gateway %s: %w", st.Gateway, err)
	}
	return nil
}

// GatewayNames reports how many gateway names principal reports under,
// and whether gateway is one of them.
func (s *Store) GatewayNames(ctx context.Context, principal, gateway string) (n int64, known bool, err error) {
	resp, err := s.c.Txn(ctx).Then(
		clientv3.OpGet(statsKey(principal, ""), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(statsKey(principal, gateway), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("count the gateways of %s: %w", principal, err)
	}
	return resp.Responses[0].GetResponseRange().Count, resp.Responses[1].GetResponseRange().Count > 0, nil
}

// ExpireGatewayStats deletes the reports made before before: gateways
// that stopped, or names that a gateway token made up. A report written
// again meanwhile stays (each delete compares the version read).
func (s *Store) ExpireGatewayStats(ctx context.Context, before time.Time) (int, error) {
	resp, err := s.c.Get(ctx, StatsPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("expire gateway stats: %w", err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		var gs api.GatewayStats
		if err := json.Unmarshal(kv.Value, &gs); err == nil && !gs.At.Before(before) {
			continue
		}
		key := string(kv.Key)
		txn, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return n, fmt.Errorf("expire gateway stats: %w", err)
		}
		if txn.Succeeded {
			n++
		}
	}
	return n, nil
}

// GatewayLoad is the autoscaler's source of the gateways' load: the latest
// report of every gateway, kept by PutGatewayStats. It is safe for
// concurrent use.
type GatewayLoad struct {
	store  *Store
	maxAge time.Duration
}

// NewGatewayLoad returns the load source of s. A report counts until it is
// maxAge old; after that its gateway is taken to have stopped.
func NewGatewayLoad(s *Store, maxAge time.Duration) *GatewayLoad {
	return &GatewayLoad{store: s, maxAge: maxAge}
}

// Load returns every revision's demand, summed over the gateways whose
// latest report is fresh at now. A report that does not decode is skipped,
// so that one bad gateway does not blind the autoscaler to the others.
func (g *GatewayLoad) Load(ctx context.Context, now time.Time) (map[api.Key]autoscaler.Load, error) {
	resp, err := g.store.c.Get(ctx, StatsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read gateway stats: %w", err)
	}
	out := map[api.Key]autoscaler.Load{}
	for _, kv := range resp.Kvs {
		var gs api.GatewayStats
		if err := json.Unmarshal(kv.Value, &gs); err != nil {
			continue
		}
		if now.Sub(gs.At) > g.maxAge {
			continue
		}
		window := statsWindow(gs.Window)
		for _, l := range gs.Revisions {
			k := api.Key{Namespace: l.Namespace, Name: l.Revision}
			v := out[k]
			// The gateway's average includes queued requests already.
			v.Sample.Concurrency += l.Concurrency
			v.Sample.Requests += float64(l.Requests)
			v.RPS += float64(l.Requests) / window.Seconds()
			out[k] = v
		}
	}
	return out, nil
}

// statsWindow is a report's window, such as "1s"; a missing or
// non-positive one is the gateways' default second, so that its requests
// still count. (A malformed one never arrives: the API server answers 400
// to a report that does not decode.)
func statsWindow(d api.Duration) time.Duration {
	if d.Duration <= 0 {
		return time.Second
	}
	return d.Duration
}

// Outcomes returns how the revisions' requests ended, as each gateway
// whose latest report is fresh at now counts them (api.Outcomes:
// cumulative counters), by gateway (its report's key) and revision. The
// rollout controller differences them from one call to the next, so a
// missed report loses nothing. A report that does not decode is skipped.
func (g *GatewayLoad) Outcomes(ctx context.Context, now time.Time) (map[string]map[api.Key]api.Outcomes, error) {
	resp, err := g.store.c.Get(ctx, StatsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read gateway stats: %w", err)
	}
	out := map[string]map[api.Key]api.Outcomes{}
	for _, kv := range resp.Kvs {
		var gs api.GatewayStats
		if err := json.Unmarshal(kv.Value, &gs); err != nil || now.Sub(gs.At) > g.maxAge {
			continue
		}
		m := map[api.Key]api.Outcomes{}
		for _, l := range gs.Revisions {
			if l.Outcomes != nil {
				m[api.Key{Namespace: l.Namespace, Name: l.Revision}] = *l.Outcomes
			}
		}
		out[string(kv.Key)] = m
	}
	return out, nil
}

// GatewayMetrics is a gateway's metrics endpoint, as its latest report
// gave it.
type GatewayMetrics struct {
	Gateway string
	URL     string
}

// GatewayMetricsURLs returns the metrics endpoint of every gateway whose
// latest report is fresh at now (at most maxAge old) and names one, by
// gateway name; two reports of one name (two tokens) give one entry.
func (s *Store) GatewayMetricsURLs(ctx context.Context, now time.Time, maxAge time.Duration) ([]GatewayMetrics, error) {
	resp, err := s.c.Get(ctx, StatsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read gateway stats: %w", err)
	}
	seen := map[string]bool{}
	var out []GatewayMetrics
	for _, kv := range resp.Kvs {
		var gs api.GatewayStats
		if json.Unmarshal(kv.Value, &gs) != nil || gs.MetricsURL == "" || now.Sub(gs.At) > maxAge || seen[gs.Gateway+" "+gs.MetricsURL] {
			continue
		}
		seen[gs.Gateway+" "+gs.MetricsURL] = true
		out = append(out, GatewayMetrics{Gateway: gs.Gateway, URL: gs.MetricsURL})
	}
	return out, nil
}
