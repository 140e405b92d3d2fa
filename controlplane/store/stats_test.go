package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/autoscaler"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/store"
)

func TestGatewayLoadSumsFreshReports(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	st := in.Store()
	ctx := context.Background()
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	const maxAge = 3 * time.Second
	load := func(rev string, concurrency float64, requests int64) api.RevisionLoad {
		return api.RevisionLoad{Namespace: "default", Function: "hello", Revision: rev, Concurrency: concurrency, Requests: requests}
	}
	put := func(principal string, gs api.GatewayStats) {
		t.Helper()
		if err := st.PutGatewayStats(ctx, principal, &gs); err != nil {
			t.Fatal(err)
		}
	}
	// gw-1 reports twice: only its latest report counts.
	put("gateway-token", api.GatewayStats{Gateway: "gw-1", Window: api.Seconds(1), At: now.Add(-time.Second),
		Revisions: []api.RevisionLoad{load("hello-00001", 100, 100)}})
	put("gateway-token", api.GatewayStats{Gateway: "gw-1", Window: api.Seconds(1), At: now.Add(-time.Second),
		Revisions: []api.RevisionLoad{load("hello-00001", 2, 4), load("hello-00002", 1, 1)}})
	// The same gateway name under another principal is another gateway;
	// a report without a window counts its requests over a second.
	put("other-token", api.GatewayStats{Gateway: "gw-1", At: now.Add(-maxAge),
		Revisions: []api.RevisionLoad{load("hello-00001", 0.5, 2)}})
	// A report over two seconds counts half its requests per second.
	put("gateway-token", api.GatewayStats{Gateway: "gw-2", Window: api.Seconds(2), At: now,
		Revisions: []api.RevisionLoad{load("hello-00001", 1, 6)}})
	// A gateway that stopped reporting no longer counts.
	put("gateway-token", api.GatewayStats{Gateway: "gw-3", Window: api.Seconds(1), At: now.Add(-maxAge - time.Millisecond),
		Revisions: []api.RevisionLoad{load("hello-00001", 50, 50), load("hello-00003", 1, 1)}})
	// A report that does not decode does not hide the others.
	if _, err := st.Client().Put(ctx, store.StatsPrefix+"gateway-token/gw-4", "{not json"); err != nil {
		t.Fatal(err)
	}

	got, err := store.NewGatewayLoad(st, maxAge).Load(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[api.Key]autoscaler.Load{
		{Namespace: "default", Name: "hello-00001"}: {Sample: autoscaler.Sample{Concurrency: 3.5, Requests: 12}, RPS: 4 + 2 + 3},
		{Namespace: "default", Name: "hello-00002"}: {Sample: autoscaler.Sample{Concurrency: 1, Requests: 1}, RPS: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}

	// Later, every report has aged out.
	got, err = store.NewGatewayLoad(st, maxAge).Load(ctx, now.Add(time.Minute))
	if err != nil || len(got) != 0 {
		t.Errorf("a minute later Load = %v, %v; want nothing", got, err)
	}

	// Names a principal reports under are counted, and the old reports
	// (and the one that does not decode) expire; the fresh stay.
	if n, known, err := st.GatewayNames(ctx, "gateway-token", "gw-2"); n != 4 || !known || err != nil {
		t.Errorf("gateway-token's names: %d, gw-2 known %v, %v; want 4, true", n, known, err)
	}
	if n, known, err := st.GatewayNames(ctx, "gateway-token", "gw-9"); n != 4 || known || err != nil {
		t.Errorf("gateway-token's names: %d, gw-9 known %v, %v; want 4, false", n, known, err)
	}
	if n, err := st.ExpireGatewayStats(ctx, now.Add(-time.Second)); n != 3 || err != nil {
		t.Errorf("expired %d reports (%v), want 3: other-token's gw-1, gw-3 and the one that does not decode", n, err)
	}
	resp, err := st.Client().Get(ctx, store.StatsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range resp.Kvs {
		left = append(left, strings.TrimPrefix(string(kv.Key), store.StatsPrefix))
	}
	if diff := cmp.Diff([]string{"gateway-token/gw-1", "gateway-token/gw-2"}, left); diff != "" {
		t.Errorf("reports left (-want +got):\n%s", diff)
	}
}
