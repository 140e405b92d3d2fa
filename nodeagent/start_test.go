package nodeagent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// TestAgentStartsThroughAnUnavailableAPI: while the API answers 503 (its
// etcd electing a leader), the agent's start-up calls wait and try again
// instead of ending the agent.
func TestAgentStartsThroughAnUnavailableAPI(t *testing.T) {
	in := controlplanetest.Start(t)
	target, _ := url.Parse(in.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	// The agent speaks to the proxy; the proxy to the API as node-1, with
	// the certificate the node got by joining.
	node, _ := in.NodeClient("node-1", "127.0.0.1")
	proxy.Transport = node.Transport()
	var refused atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/nodes" && refused.Add(1) <= 2 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"code":503,"reason":"ServiceUnavailable","error":"etcd is electing a leader"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	c, err := client.New(&client.Config{Server: front.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Transport().(*http.Transport).CloseIdleConnections()

	cfg := DefaultConfig()
	cfg.NodeName = "node-1"
	f := newFakeRuntime(t)
	a, err := New(cfg, c, func(context.Context, *api.Node) (Runtime, error) { return f, nil }, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "the node registered after two 503s", func() (bool, string) {
		n, err := client.Get[api.Node](context.Background(), in.Client(), api.Key{Name: "node-1"})
		return err == nil && n.Status.State == api.NodeAlive && refused.Load() > 2, time.Now().String()
	})
	select {
	case err := <-done:
		t.Fatalf("the agent ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("agent: %v", err)
	}
	proxy.Transport.(*http.Transport).CloseIdleConnections()
}
