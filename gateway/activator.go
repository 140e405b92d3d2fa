package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/clock"
)

// ControlPlaneActivator asks the control plane for a revision's first
// replica when a request finds none, so that scale from zero does not wait
// for the autoscaler's next tick.
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
// own and returns at once. The gateway keeps the request queued; the new
// replica reaches it through the route sources.
func (a *ControlPlaneActivator) Activate(namespace, function, revision string) {
	timeout := a.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	a.calls.Go(func() {
		ctx, cancel := clock.WithTimeout(context.Background(), clock.Or(a.Clock), timeout)
		defer cancel()
		path := client.ObjectPath[api.Scale](api.Key{Namespace: namespace, Name: revision}) + "/activate"
		if err := a.Client.Do(ctx, http.MethodPost, path, nil, nil); err != nil && a.Log != nil {
			a.Log.Warn("activate revision", "namespace", namespace, "function", function, "revision", revision, "err", err)
		}
	})
}

// Wait returns once every call that Activate started has ended, each
// within Timeout. Call it when no more calls come: after the gateway's
// Run returned.
func (a *ControlPlaneActivator) Wait() { a.calls.Wait() }
