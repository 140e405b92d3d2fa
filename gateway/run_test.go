package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gossip"
)

// runningGateway is a gateway that Run assembled, against a fake API.
type runningGateway struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startRun runs the gateway of opts (with a loopback listener) until the
// test ends, and checks that it then returns nil.
func startRun(t *testing.T, opts Options) *runningGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	rg := &runningGateway{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- Run(ctx, opts) }()
	t.Cleanup(func() {
		httpClient.CloseIdleConnections() // see startGateway
		cancel()
		select {
		case err := <-rg.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
		}
	})
	return rg
}

func (rg *runningGateway) get(host string) (int, string, error) {
	return (&testGateway{addr: rg.addr}).get(httpClient, host, "/")
}

// helloAPI is a fake API listing function hello, whose revision
// hello-00001 takes its traffic; with a ready replica at addr unless addr
// is "".
func helloAPI(t *testing.T, addr string) (*fakeAPI, client.Config) {
	t.Helper()
	fake := newFakeAPI()
	fake.lists["functions"] = api.List[api.Function]{ResourceVersion: "5", Items: []api.Function{{
		Metadata: api.ObjectMeta{Name: "hello", Namespace: "default"}, Status: api.FunctionStatus{LatestRevision: "hello-00001"}}}}
	fake.lists["revisions"] = api.List[api.Revision]{ResourceVersion: "5", Items: []api.Revision{{
		Metadata: api.ObjectMeta{Name: "hello-00001", Namespace: "default"},
		Spec:     api.RevisionSpec{Function: "hello", Number: 1}}}}
	if addr != "" {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		fake.lists["replicas"] = api.List[api.Replica]{ResourceVersion: "5", Items: []api.Replica{{
			Metadata: api.ObjectMeta{Name: "hello-00001-aaaaa", Namespace: "default"},
			Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "node-a"},
			Status:   api.ReplicaStatus{Phase: api.ReplicaReady, IP: host, Port: int32(p)}}}}
	}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, client.Config{Server: srv.URL, Token: "t"}
}

func helloReplica(t *testing.T) string {
	return backend(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello from the replica")) })
}

// TestRunRoutesWhatTheAPIListsAndReportsStats: the gateway Run assembles
// watches the API, routes a function it lists to its replica, reports
// the requests to the API under its name every stats window, and
// registers its metrics.
func TestRunRoutesWhatTheAPIListsAndReportsStats(t *testing.T) {
	fake, apiCfg := helloAPI(t, helloReplica(t))
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	opts := DefaultOptions()
	opts.API, opts.Name, opts.Clock, opts.Registerer = apiCfg, "gw-test", clk, reg
	rg := startRun(t, opts)

	eventually(t, "hello to be routed", func() bool {
		code, body, err := rg.get("hello.surge.localhost")
		return err == nil && code == http.StatusOK && body == "hello from the replica"
	})
	// Each advance ends a stats window; a send times out on this clock,
	// so let each one have its time (real time, on a loaded machine)
	// before the clock moves on.
	eventually(t, "the request to be reported", func() bool {
		clk.Advance(opts.Config.StatsInterval)
		for range 100 {
			if fake.requestsReported("gw-test", "hello-00001") >= 1 {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	})
	if n, err := testutil.GatherAndCount(reg, "surge_gateway_requests_total"); err != nil || n == 0 {
		t.Errorf("requests metric: %d series, %v", n, err)
	}
}

// TestRunRoutesAnEndpointGossipAnnounces: given seeds, the gateway gets
// the gossip key from the API with its token, joins gossip through its
// seed, and routes to a replica the moment its node's agent announces it
// there, while the API still lists it as starting.
func TestRunRoutesAnEndpointGossipAnnounces(t *testing.T) {
	replica := helloReplica(t)
	fake, apiCfg := helloAPI(t, "")
	fake.lists["nodes"] = api.List[api.Node]{ResourceVersion: "5", Items: []api.Node{
		{Metadata: api.ObjectMeta{Name: "node-a"}, Spec: api.NodeSpec{PodSubnet: "127.0.0.0/24"}},
	}}
	fake.lists["replicas"] = api.List[api.Replica]{ResourceVersion: "5", Items: []api.Replica{{
		Metadata: api.ObjectMeta{Name: "hello-00001-bbbbb", Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "node-a"},
		Status:   api.ReplicaStatus{Phase: api.ReplicaStarting},
	}}}
	agent, err := gossip.Start(gossip.Options{Role: gossip.RoleAgent, NodeName: "node-a", Addr: "127.0.0.1:0",
		Key: testGossipKey, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Stop()
	opts := DefaultOptions()
	opts.API = apiCfg
	opts.GossipAddr, opts.GossipSeeds = "127.0.0.1:0", []string{agent.LocalNode().Addr.String()}
	rg := startRun(t, opts)
	// The source's list of replicas replaces every endpoint, gossip's too:
	// announce once it has been applied.
	eventually(t, "the API's replicas and nodes to be watched", func() bool {
		return fake.watchCount("replicas") > 0 && fake.watchCount("nodes") > 0
	})

	ap := netip.MustParseAddrPort(replica)
	ev := gossip.EndpointEvent{Type: gossip.EndpointReady, Namespace: "default", Function: "hello", Revision: "hello-00001",
		Replica: "hello-00001-bbbbb", Node: "node-a", IP: ap.Addr(), Port: ap.Port()}
	if err := agent.Broadcast(ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hello to be routed to the announced replica", func() bool {
		code, body, err := rg.get("hello.surge.localhost")
		return err == nil && code == http.StatusOK && body == "hello from the replica"
	})
}

func TestRunReportsEveryBadOption(t *testing.T) {
	opts := DefaultOptions()
	opts.Config.Domain = "bad/domain"
	opts.Config.MaxRetries = -1
	opts.API = client.Config{Server: "ftp://api"}
	opts.Name = "-gw"
	opts.GossipSeeds = []string{"10.0.0.1:7946"}
	opts.GossipAddr = "localhost:7947"
	err := Run(context.Background(), opts)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Run = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{
		"Config.Domain = bad/domain",
		"Config.MaxRetries = -1",
		`API.Server "ftp://api"`,
		"API.Token is empty",
		`Name "-gw"`,
		`GossipAddr "localhost:7947"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run's error lacks %q:\n%v", want, err)
		}
	}

}
