package gateway

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/clock"
)

// fakeAPI serves list and watch for the five kinds the source reads, the
// way controlplane/apiserver does: a list, then newline-delimited events;
// it keeps the stats windows gateways post, and hands out the gossip key
// (testGossipKey).
type fakeAPI struct {
	mu     sync.Mutex
	lists  map[string]any // plural -> api.List[T]
	listed map[string]int
	// failLists answers that many next lists of a kind 503.
	failLists map[string]int
	events    map[string]chan string // plural -> JSON lines
	watched   map[string]int         // plural -> watches begun
	stats     []api.GatewayStats
}

// testGossipKey is the gossip key of the tests' clusters.
var testGossipKey = []byte("surge-gateway-test-gossip-key-01")

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{lists: map[string]any{}, listed: map[string]int{}, failLists: map[string]int{}, events: map[string]chan string{}, watched: map[string]int{}}
	for _, k := range []string{"functions", "revisions", "traffic", "replicas", "nodes"} {
		f.events[k] = make(chan string, 16)
		f.lists[k] = api.List[struct{}]{ResourceVersion: "1", Items: []struct{}{}}
	}
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := strings.TrimPrefix(r.URL.Path, "/v1/")
	if r.Header.Get("Authorization") != "Bearer t" {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(api.Error{Code: 401, Reason: api.ReasonUnauthorized, Message: "no"})
		return
	}
	if r.Method == http.MethodGet && kind == "gossip/key" {
		json.NewEncoder(w).Encode(api.GossipKey{Key: hex.EncodeToString(testGossipKey)})
		return
	}
	if r.Method == http.MethodPost && kind == "stats" {
		var st api.GatewayStats
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.stats = append(f.stats, st)
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		return
	}
	ch, ok := f.events[kind]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("watch") != "true" {
		f.mu.Lock()
		f.listed[kind]++
		l := f.lists[kind]
		fail := f.failLists[kind] > 0
		if fail {
			f.failLists[kind]--
		}
		f.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(api.Error{Code: 503, Reason: "Unavailable", Message: "try later"})
			return
		}
		json.NewEncoder(w).Encode(l)
		return
	}
	f.mu.Lock()
	f.watched[kind]++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case line := <-ch:
			w.Write([]byte(line + "\n"))
			w.(http.Flusher).Flush()
			if strings.Contains(line, `"ERROR"`) {
				return
			}
		}
	}
}

func (f *fakeAPI) listCount(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed[kind]
}

// watchCount is how many watches of kind began: a source watches a kind
// once it has applied its list.
func (f *fakeAPI) watchCount(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watched[kind]
}

// requestsReported sums the requests that gateway reported for revision.
func (f *fakeAPI) requestsReported(gateway, revision string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, st := range f.stats {
		for _, r := range st.Revisions {
			if st.Gateway == gateway && r.Revision == revision {
				n += r.Requests
			}
		}
	}
	return n
}

func event[T any](typ string, obj T, rv string) string {
	b, _ := json.Marshal(api.WatchEvent[T]{Type: typ, Object: obj, ResourceVersion: rv})
	return string(b)
}

func replica(name, phase, ip string) api.Replica {
	return api.Replica{
		Metadata: api.ObjectMeta{Name: name, Namespace: "default"},
		Spec:     api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "n1"},
		Status:   api.ReplicaStatus{Phase: api.ReplicaPhase(phase), IP: ip, Port: 8080},
	}
}

func TestControlPlaneSourceListsWatchesAndRelists(t *testing.T) {
	fake := newFakeAPI()
	fake.lists["functions"] = api.List[api.Function]{ResourceVersion: "5", Items: []api.Function{{
		Metadata: api.ObjectMeta{Name: "hello"}, Status: api.FunctionStatus{LatestRevision: "hello-00001"}}}}
	fake.lists["revisions"] = api.List[api.Revision]{ResourceVersion: "5", Items: []api.Revision{{
		Metadata: api.ObjectMeta{Name: "hello-00001", Namespace: "default"},
		Spec:     api.RevisionSpec{Function: "hello", Number: 1, Template: api.FunctionSpec{Concurrency: 3, Timeout: api.Seconds(2)}}}}}
	fake.lists["replicas"] = api.List[api.Replica]{ResourceVersion: "5", Items: []api.Replica{replica("r1", "Ready", "10.1.1.1")}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, err := client.New(&client.Config{Server: srv.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	routes := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 1, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	src := &ControlPlaneSource{Client: c, RetryDelay: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, routes) }()

	addrs := func() []string {
		fr := routes.Load().routes["hello"]
		if fr == nil || len(fr.targets) == 0 {
			return nil
		}
		var out []string
		for _, e := range fr.targets[0].rev.endpoints() {
			out = append(out, e.addr)
		}
		return out
	}
	eventually(t, "the listed replica to be routed", func() bool { return strings.Join(addrs(), ",") == "10.1.1.1:8080" })
	rev := routes.Load().routes["hello"].targets[0].rev
	if rev.limit != 3 || rev.timeout != 2*time.Second {
		t.Errorf("revision limit %d timeout %v, want 3 and 2s", rev.limit, rev.timeout)
	}

	fake.events["replicas"] <- event("ADDED", replica("r2", "Ready", "10.1.1.2"), "6")
	eventually(t, "an added replica", func() bool { return strings.Join(addrs(), ",") == "10.1.1.1:8080,10.1.1.2:8080" })
	fake.events["replicas"] <- event("MODIFIED", replica("r1", "Terminating", "10.1.1.1"), "7")
	eventually(t, "a terminating replica to leave", func() bool { return strings.Join(addrs(), ",") == "10.1.1.2:8080" })
	fake.events["replicas"] <- event("DELETED", replica("r2", "Ready", "10.1.1.2"), "8")
	eventually(t, "a deleted replica to leave", func() bool { return len(addrs()) == 0 })

	// History compacted: the source lists again and replaces the kind.
	fake.mu.Lock()
	fake.lists["replicas"] = api.List[api.Replica]{ResourceVersion: "20", Items: []api.Replica{replica("r3", "Ready", "10.1.1.3")}}
	fake.mu.Unlock()
	gone, _ := json.Marshal(api.WatchEvent[*api.Replica]{Type: api.EventError, Error: &api.Error{Code: 410, Reason: api.ReasonGone, Message: "compacted"}})
	fake.events["replicas"] <- string(gone)
	eventually(t, "a relist after 410", func() bool { return strings.Join(addrs(), ",") == "10.1.1.3:8080" })
	if n := fake.listCount("replicas"); n != 2 {
		t.Errorf("replicas listed %d times, want 2", n)
	}

	// Traffic arrives by watch.
	fake.events["traffic"] <- event("ADDED", api.Traffic{Metadata: api.ObjectMeta{Name: "hello"},
		Spec: api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: "hello-00001", Percent: 100}}}}, "21")
	eventually(t, "traffic", func() bool {
		r := routes.Load().routes["hello"]
		return r != nil && len(r.targets) == 1 && r.targets[0].cum == 100
	})

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

// TestControlPlaneSourceBacksOffOnItsClock: a failed list is tried again
// after a back-off on the source's Clock, and only then.
func TestControlPlaneSourceBacksOffOnItsClock(t *testing.T) {
	fake := newFakeAPI()
	fake.failLists["functions"] = 2
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, err := client.New(&client.Config{Server: srv.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	routes := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 1, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	clk := clock.NewFake()
	src := &ControlPlaneSource{Client: c, Clock: clk, RetryDelay: time.Minute, MaxRetryDelay: 2 * time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, routes) }()
	for n := 1; n <= 2; n++ {
		// Only the functions' sync fails, so the one timer is its wait.
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := clk.BlockUntilContext(wctx, 1); err != nil {
			t.Fatalf("the source does not wait on its clock after failed list %d: %v", n, err)
		}
		wcancel()
		if got := fake.listCount("functions"); got != n {
			t.Fatalf("functions listed %d times during wait %d, want %d", got, n, n)
		}
		clk.Advance(src.MaxRetryDelay) // the longest a wait can be
	}
	eventually(t, "the third list", func() bool { return fake.listCount("functions") == 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestControlPlaneSourceStopsOnUnauthorized(t *testing.T) {
	srv := httptest.NewServer(newFakeAPI())
	defer srv.Close()
	c, _ := client.New(&client.Config{Server: srv.URL, Token: "wrong"})
	routes := newRoutes(routeConfig{defaultTimeout: time.Minute, queueDepth: 1, budget: newBudgetConfig(0.2, 1)}, routeHooks{})
	err := (&ControlPlaneSource{Client: c}).Run(context.Background(), routes)
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("Run = %v, want ErrUnauthorized", err)
	}
}

func TestFunctionWithoutTrafficFallsBackToItsLatestReadyRevision(t *testing.T) {
	for _, tt := range []struct {
		status api.FunctionStatus
		want   string
	}{
		{api.FunctionStatus{LatestRevision: "hello-00001"}, "hello-00001"},
		{api.FunctionStatus{LatestRevision: "hello-00001", LatestReadyRevision: "hello-00001"}, "hello-00001"},
		// hello-00002 is rolling out: it has no Ready replica yet.
		{api.FunctionStatus{LatestRevision: "hello-00002", LatestReadyRevision: "hello-00001"}, "hello-00001"},
	} {
		got := functionInfo(&api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Status: tt.status}).DefaultRevision
		if got != tt.want {
			t.Errorf("%+v: DefaultRevision %q, want %q", tt.status, got, tt.want)
		}
	}
}
