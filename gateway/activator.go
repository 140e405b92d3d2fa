package gateway

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/clock"
)

// ControlPlaneActivator asks the control plane for replicas when requests
// find a revision with none, or with every one at its limit: the API
// raises the revision's Scale to what the demand needs (at once, without
// waiting for the autoscaler's next tick) and tells the autoscaler.
type ControlPlaneActivator struct {
	// Client reaches the API with a token that may write activations.
	Client *client.Client
	// Log receives failures; nil discards them.
	Log *slog.Logger
	// Timeout bounds one call; zero means 5s.
	Timeout time.Duration
	// Clock times Timeout; nil means the wall clock.
	Clock clock.Clock

	calls sync.WaitGroup
}

var _ Activator = (*ControlPlaneActivator)(nil)

// Activate implements Activator: it calls the API from a goroutine of its
// own and returns at once. The gateway keeps the requests queued; the new
// replicas reach them through the route sources.
func (a *ControlPlaneActivator) Activate(namespace, function, revision string, demand int) {
	timeout := a.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	a.calls.Go(func() {
		ctx, cancel := clock.WithTimeout(context.Background(), clock.Or(a.Clock), timeout)
		defer cancel()
		path := client.ObjectPath[api.Scale](api.Key{Namespace: namespace, Name: revision}) + "/activate"
		body := &api.Activation{Demand: int32(min(demand, math.MaxInt32))}
		if err := a.Client.Do(ctx, http.MethodPost, path, body, nil); err != nil && a.Log != nil {
			a.Log.Warn("activate revision", "namespace", namespace, "function", function, "revision", revision, "demand", demand, "err", err)
		}
	})
}

// Wait returns once every call that Activate started has ended, each
// within Timeout. Call it when no more calls come: after the gateway's
// Run returned.
func (a *ControlPlaneActivator) Wait() { a.calls.Wait() }
