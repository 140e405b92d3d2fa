package autoscaler

import (
	"time"

	"github.com/surgeplatform/surge/api"
)

// policyFor turns a revision's scaling spec into its Decider's policy.
// An explicit scale-to-zero grace is a fixed keep-alive: the user asked
// for that long, so the adaptive keep-alive does not second-guess it.
func policyFor(spec *api.FunctionSpec) Policy {
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
	return p
}

// specDuration reads a duration of a function's spec, such as "30s". It
// returns 0, which a Policy reads as the Config's default, for an empty,
// malformed or non-positive one: the API admits specs before this code
// sees them, and a revision must still be scaled. The api package keeps
// these durations as strings; this is the one place that parses them, so
// that typed durations there replace this one function.
func specDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0
	}
	return d
}
