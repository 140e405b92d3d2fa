package autoscaler

import (
	"time"

	"github.com/surgeplatform/surge/api"
)

// policyFor turns a revision's scaling spec into its Decider's policy,
// with the cluster's bound on replicas (0: none) where the spec sets none
// or a higher one. An explicit scale-to-zero grace is a fixed keep-alive:
// the user asked for that long, so the adaptive keep-alive does not
// second-guess it.
func policyFor(spec *api.FunctionSpec, clusterMax int) Policy {
	metric := MetricConcurrency
	if spec.Scaling.Metric == api.MetricRPS {
		metric = MetricRPS
	}
	p := Policy{
		MinReplicas:          int(spec.Scaling.MinScale),
		MaxReplicas:          int(spec.Scaling.MaxScale),
		ContainerConcurrency: int(spec.Concurrency),
		Targets:              []Target{{Metric: metric, Value: spec.Scaling.Target}},
		StableWindow:         specDuration(spec.Scaling.StableWindow),
		ScaleToZeroGrace:     specDuration(spec.Scaling.ScaleToZeroGrace),
		KeepAlive:            KeepAliveAdaptive,
	}
	if p.ScaleToZeroGrace > 0 {
		p.KeepAlive = KeepAliveFixed
	}
	if clusterMax > 0 && (p.MaxReplicas == 0 || p.MaxReplicas > clusterMax) {
		p.MaxReplicas = clusterMax
		p.MinReplicas = min(p.MinReplicas, clusterMax)
	}
	return p
}

// specDuration is a duration of a function's spec, or 0, which a Policy
// reads as the Config's default, for a non-positive one: the API admits
// specs before this code sees them, and a revision must still be scaled.
func specDuration(d api.Duration) time.Duration {
	return max(d.Duration, 0)
}
