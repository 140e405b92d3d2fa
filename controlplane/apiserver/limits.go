package apiserver

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// Limits are the API server's quotas. Each is refused with a 4xx that
// names it: a spec over a bound is a 422 naming the field and the limit,
// a watch over the count a 429.
type Limits struct {
	// MaxWatchesPerPrincipal bounds the watches one token (or one node's
	// certificate) holds open on this server at once; each holds an etcd
	// watch and a goroutine. Gateways share the gateway token and open a
	// few watches each, so the default serves a hundred gateways on one
	// token; more gateways take more gateway tokens (surge token create).
	MaxWatchesPerPrincipal int
	// MaxMinScale bounds a function's scaling.minScale: replicas that run
	// even when idle hold their cpu and memory on the nodes forever.
	MaxMinScale int32
	// MaxReplicas bounds a function's scaling.maxScale and the replicas a
	// Scale asks for, so that a typo does not ask the scheduler for a
	// million replicas.
	MaxReplicas int32
	// MaxGatewaysPerToken bounds the gateway names one token reports load
	// under: each name is a key in etcd, kept a minute after its last
	// report. Gateways that share a token share the bound.
	MaxGatewaysPerToken int
	// MaxReportedRevisions bounds the revisions in one load report, and
	// MaxReportedLoad a revision's concurrency and requests per second in
	// it: no gateway holds more (10,000 may wait per revision by
	// default), so one report cannot ask the autoscaler for more than
	// MaxReportedLoad / target replicas, and never more than MaxReplicas.
	MaxReportedRevisions int
	MaxReportedLoad      float64
}

// DefaultLimits returns the limits a server has unless told otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxWatchesPerPrincipal: 512,
		MaxMinScale:            100,
		MaxReplicas:            1000,
		MaxGatewaysPerToken:    64,
		MaxReportedRevisions:   10000,
		MaxReportedLoad:        100000,
	}
}

// withDefaults fills the zero limits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxWatchesPerPrincipal == 0 {
		l.MaxWatchesPerPrincipal = d.MaxWatchesPerPrincipal
	}
	if l.MaxMinScale == 0 {
		l.MaxMinScale = d.MaxMinScale
	}
	if l.MaxReplicas == 0 {
		l.MaxReplicas = d.MaxReplicas
	}
	if l.MaxGatewaysPerToken == 0 {
		l.MaxGatewaysPerToken = d.MaxGatewaysPerToken
	}
	if l.MaxReportedRevisions == 0 {
		l.MaxReportedRevisions = d.MaxReportedRevisions
	}
	if l.MaxReportedLoad == 0 {
		l.MaxReportedLoad = d.MaxReportedLoad
	}
	return l
}

// validate reports every limit that is out of range.
func (l Limits) validate() []error {
	var errs []error
	if l.MaxWatchesPerPrincipal < 0 {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxWatchesPerPrincipal %d: want > 0", l.MaxWatchesPerPrincipal))
	}
	if l.MaxMinScale < 0 {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxMinScale %d: want > 0", l.MaxMinScale))
	}
	if l.MaxReplicas < 0 {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxReplicas %d: want > 0", l.MaxReplicas))
	}
	if l.MaxGatewaysPerToken < 0 {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxGatewaysPerToken %d: want > 0", l.MaxGatewaysPerToken))
	}
	if l.MaxReportedRevisions < 0 {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxReportedRevisions %d: want > 0", l.MaxReportedRevisions))
	}
	if !(l.MaxReportedLoad >= 0) {
		errs = append(errs, fmt.Errorf("apiserver config: Limits.MaxReportedLoad %v: want > 0", l.MaxReportedLoad))
	}
	return errs
}

// functionLimits checks a function's scaling against the limits.
func (l Limits) functionLimits(f *api.Function) error {
	var errs api.FieldErrors
	sc := f.Spec.Scaling
	if sc.MinScale > l.MaxMinScale {
		errs = append(errs, api.FieldError{Field: "spec.scaling.minScale",
			Message: fmt.Sprintf("%d is above this server's limit of %d (MaxMinScale)", sc.MinScale, l.MaxMinScale)})
	}
	if sc.MaxScale > l.MaxReplicas {
		errs = append(errs, api.FieldError{Field: "spec.scaling.maxScale",
			Message: fmt.Sprintf("%d is above this server's limit of %d replicas (MaxReplicas)", sc.MaxScale, l.MaxReplicas)})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// scaleLimits checks a Scale's replicas against the limits.
func (l Limits) scaleLimits(sc *api.Scale) error {
	if sc.Spec.Replicas > l.MaxReplicas {
		return api.FieldErrors{{Field: "spec.replicas",
			Message: fmt.Sprintf("%d is above this server's limit of %d replicas (MaxReplicas)", sc.Spec.Replicas, l.MaxReplicas)}}
	}
	return nil
}

// watchCounter counts the watches each principal holds open on this
// server. Servers count apart: with several servers behind one address a
// principal may hold the limit on each.
type watchCounter struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newWatchCounter(max int) *watchCounter {
	return &watchCounter{max: max, open: map[string]int{}}
}

// watcherKey names a principal: its token, or its node.
func watcherKey(p auth.Principal) string {
	if p.Node != "" {
		return "node/" + p.Node
	}
	return "token/" + p.ID
}

// acquire counts one more watch of p, or refuses it with a 429 naming the
// limit; release gives it back.
func (c *watchCounter) acquire(p auth.Principal) (release func(), err error) {
	k := watcherKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[k] >= c.max {
		return nil, api.NewError(http.StatusTooManyRequests, ReasonTooManyWatches,
			"%s holds %d watches open on this server, its limit (MaxWatchesPerPrincipal): close some, or give each client a token of its own",
			p.Name(), c.open[k])
	}
	c.open[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.open[k]--; c.open[k] == 0 {
				delete(c.open, k)
			}
		})
	}, nil
}

// ReasonTooManyWatches is the reason of the 429 that refuses a watch over
// Limits.MaxWatchesPerPrincipal.
const ReasonTooManyWatches = "TooManyWatches"
