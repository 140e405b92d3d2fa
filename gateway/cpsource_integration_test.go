package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// readyReplica writes a replica of fn's first revision as a node agent
// would: created bound to a node, then reported Ready at addr.
func readyReplica(t *testing.T, c *client.Client, fn, addr string) {
	t.Helper()
	ctx := context.Background()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	rev := fn + "-00001"
	r := &api.Replica{
		Metadata: api.ObjectMeta{Name: rev + "-gw001"},
		Spec:     api.ReplicaSpec{Function: fn, Revision: rev, NodeName: "node-a"},
	}
	if err := c.Do(ctx, http.MethodPost, client.CollectionPath[api.Replica](api.DefaultNamespace), r, r); err != nil {
		t.Fatalf("create replica of %s: %v", fn, err)
	}
	r.Status = api.ReplicaStatus{Phase: api.ReplicaReady, IP: host, Port: int32(p)}
	if err := c.Do(ctx, http.MethodPut, client.ObjectPath[api.Replica](api.Key{Namespace: api.DefaultNamespace, Name: r.Metadata.Name})+"/status", r, r); err != nil {
		t.Fatalf("report replica of %s ready: %v", fn, err)
	}
}

// deploy creates a function through the API (which makes its first
// revision and sends it all traffic) with one ready replica answering body.
func deploy(t *testing.T, c *client.Client, fn, body string) {
	t.Helper()
	f := &api.Function{Metadata: api.ObjectMeta{Name: fn}, Spec: api.FunctionSpec{Image: "example.test/" + fn + ":v1"}}
	if _, err := c.PutFunction(context.Background(), f); err != nil {
		t.Fatalf("deploy %s: %v", fn, err)
	}
	readyReplica(t, c, fn, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
}

// waitRouted polls until fn's host is answered 200 with body. The deadline
// is long: after a control-plane restart the watch reconnects with a
// back-off of up to 5s.
func waitRouted(t *testing.T, tg *testGateway, fn, body string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, got, err := tg.get(httpClient, fn+".surge.localhost", "/")
		if err == nil && code == http.StatusOK && got == body {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not routed: last answer %d %q %v", fn, code, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRoutingSurvivesControlPlaneOutage(t *testing.T) {
	// Scales are left as deployed (one replica): the replicas written here
	// are the ones the replica controller counts.
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.Autoscaling.Manual = true })
	admin := in.Client()
	deploy(t, admin, "hello", "hello from the replica")

	src := &ControlPlaneSource{Client: in.Client(), RetryDelay: 50 * time.Millisecond, MaxRetryDelay: time.Second}
	tg := startGateway(t, testConfig(), Deps{Sources: []RouteSource{src}})
	waitRouted(t, tg, "hello", "hello from the replica")

	in.Stop()
	if _, err := client.List[api.Function](context.Background(), admin, "", nil); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("API after Stop: %v, want unreachable", err)
	}
	// Requests keep flowing for a while, spread out so that the route
	// watches fail and retry meanwhile.
	const requests = 200
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range requests {
		<-tick.C
		code, body, err := tg.get(httpClient, "hello.surge.localhost", "/")
		if err != nil || code != http.StatusOK || body != "hello from the replica" {
			t.Fatalf("request %d of %d with the control plane down: %d %q %v", i+1, requests, code, body, err)
		}
	}

	// Back up, the source reconnects: a function deployed now is routed,
	// and the old one still is.
	in.Restart()
	deploy(t, in.Client(), "late", "late but routed")
	waitRouted(t, tg, "late", "late but routed")
	waitRouted(t, tg, "hello", "hello from the replica")
}
