package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// ControlPlaneSource feeds routes from the API server: it lists and then
// watches functions, revisions, traffic and replicas, and applies every
// change to the routing state. When the API is unreachable it keeps the
// last state (the data path does not need the control plane) and tries
// again with back-off, jittered so that the gateways do not all come back
// at once when the API does; when its watch history was compacted it lists
// again and replaces that kind's objects in one Update.
//
// Use one ControlPlaneSource per Routes: a relist clears every object of
// its kind.
type ControlPlaneSource struct {
	// Client reaches the API; it needs read access to the four kinds.
	Client *client.Client
	// Namespace limits the source to one namespace; "" watches all.
	Namespace string
	// Log receives reconnects and errors; nil discards them.
	Log *slog.Logger
	// RetryDelay is the first wait after a failed list or a broken watch;
	// it doubles with each failure in a row, up to MaxRetryDelay, less up
	// to half of it at random (see backoff.Policy). Zero values mean 200ms
	// and 10s.
	RetryDelay, MaxRetryDelay time.Duration
	// Clock times the back-off; nil means the wall clock.
	Clock clock.Clock
}

var _ RouteSource = (*ControlPlaneSource)(nil)

// Run implements RouteSource. It returns ctx.Err() when ctx ends, or the
// API's refusal (unauthorized, forbidden) that retrying will not fix.
func (s *ControlPlaneSource) Run(ctx context.Context, u Updater) error {
	if s.Client == nil {
		return errors.New("control-plane route source: no API client")
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		return syncKind(ctx, s, u, func(st *State) { st.ClearFunctions() },
			func(st *State, f *api.Function) { st.SetFunction(functionInfo(f)) },
			func(st *State, f *api.Function) { st.DeleteFunction(nsOf(f.Metadata), f.Metadata.Name) })
	})
	eg.Go(func() error {
		return syncKind(ctx, s, u, func(st *State) { st.ClearRevisions() },
			func(st *State, r *api.Revision) { st.SetRevision(revisionInfo(r)) },
			func(st *State, r *api.Revision) { st.DeleteRevision(nsOf(r.Metadata), r.Metadata.Name) })
	})
	eg.Go(func() error {
		return syncKind(ctx, s, u, func(st *State) { st.ClearTraffic() },
			func(st *State, t *api.Traffic) { st.SetTraffic(nsOf(t.Metadata), t.Metadata.Name, t.Spec.Targets) },
			func(st *State, t *api.Traffic) { st.DeleteTraffic(nsOf(t.Metadata), t.Metadata.Name) })
	})
	eg.Go(func() error {
		// Nodes' pod subnets, against which what gossip announces is checked.
		return syncKind(ctx, s, u, func(st *State) { st.ClearNodeSubnets() },
			func(st *State, n *api.Node) { st.SetNodeSubnet(n.Metadata.Name, podSubnet(n)) },
			func(st *State, n *api.Node) { st.ForgetNode(n.Metadata.Name) })
	})
	eg.Go(func() error {
		return syncKind(ctx, s, u, func(st *State) { st.ClearEndpoints() },
			func(st *State, r *api.Replica) { st.SetEndpoint(endpointInfo(r)) },
			func(st *State, r *api.Replica) { st.DeleteEndpoint(nsOf(r.Metadata), r.Metadata.Name) })
	})
	return eg.Wait()
}

// syncKind lists the objects of type T, replaces the state's objects of
// that kind with the list, and watches from the list's version, until ctx
// ends.
func syncKind[T any, P api.ObjectPtr[T]](ctx context.Context, s *ControlPlaneSource, u Updater,
	clearAll func(*State), set, del func(*State, *T)) error {
	plural := api.KindOf[T, P]().Plural
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk := clock.Or(s.Clock)
	policy := backoff.Policy{
		Base:   cmpDur(s.RetryDelay, 200*time.Millisecond),
		Max:    cmpDur(s.MaxRetryDelay, 10*time.Second),
		Jitter: 0.5,
	}
	failures := 0 // in a row: a list that succeeds ends the streak
	for {
		list, err := client.List[T, P](ctx, s.Client, s.Namespace, nil)
		if err == nil {
			u.Update(func(st *State) {
				clearAll(st)
				for i := range list.Items {
					set(st, &list.Items[i])
				}
			})
			failures = 0
			err = client.Watch[T, P](ctx, s.Client, s.Namespace, client.WatchOptions{ResourceVersion: list.ResourceVersion},
				func(e api.WatchEvent[*T]) error {
					if e.Object == nil {
						return nil
					}
					u.Update(func(st *State) {
						switch e.Type {
						case api.EventAdded, api.EventModified:
							set(st, e.Object)
						case api.EventDeleted:
							del(st, e.Object)
						}
					})
					return nil
				})
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, api.ErrGone):
			log.Info("route watch history compacted; listing again", "kind", plural)
			continue
		case errors.Is(err, api.ErrUnauthorized), errors.Is(err, api.ErrForbidden):
			return fmt.Errorf("watch %s: %w", plural, err)
		}
		failures++
		delay := policy.Delay(failures)
		log.Warn("route watch broke; keeping the last routes and retrying", "kind", plural, "err", err, "retry_in", delay)
		if !clock.Sleep(ctx, clk, delay) {
			return ctx.Err()
		}
	}
}

func cmpDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func nsOf(m api.ObjectMeta) string {
	if m.Namespace == "" {
		return api.DefaultNamespace
	}
	return m.Namespace
}

func functionInfo(f *api.Function) FunctionInfo {
	def := f.Status.LatestReadyRevision
	if def == "" {
		def = f.Status.LatestRevision
	}
	return FunctionInfo{Namespace: nsOf(f.Metadata), Name: f.Metadata.Name, DefaultRevision: def, HTTPSRedirect: f.Spec.HTTPSRedirect}
}

func revisionInfo(r *api.Revision) RevisionInfo {
	ri := RevisionInfo{
		Namespace:   nsOf(r.Metadata),
		Name:        r.Metadata.Name,
		Function:    r.Spec.Function,
		Number:      r.Spec.Number,
		Concurrency: r.Spec.Template.Concurrency,
		QueueDepth:  int(r.Spec.Template.QueueDepth),
	}
	if d := r.Spec.Template.Timeout.Duration; d > 0 {
		ri.Timeout = d
	}
	return ri
}

// podSubnet is a node's pod subnet; the zero Prefix while it has none.
func podSubnet(n *api.Node) netip.Prefix {
	p, err := netip.ParsePrefix(n.Spec.PodSubnet)
	if err != nil {
		return netip.Prefix{}
	}
	return p.Masked()
}

func endpointInfo(r *api.Replica) EndpointInfo {
	e := EndpointInfo{
		Namespace: nsOf(r.Metadata),
		Replica:   r.Metadata.Name,
		Function:  r.Spec.Function,
		Revision:  r.Spec.Revision,
		Node:      r.Spec.NodeName,
		Phase:     r.Status.Phase,
	}
	if r.Status.IP != "" && r.Status.Port > 0 {
		e.Addr = net.JoinHostPort(r.Status.IP, strconv.Itoa(int(r.Status.Port)))
	}
	return e
}
