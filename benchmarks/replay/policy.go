package main

import (
	"fmt"
	"time"

	"github.com/surgeplatform/surge/autoscaler"
)

// Policies lists the policies -policy all replays, in output order.
var Policies = []string{"fixed10", "knative", "surge"}

// newDriver returns a fresh driver (one function's state) for a policy
// under opts.
func newDriver(policy string, opts Options) (driver, error) {
	// Every function replays with a per-replica concurrency of 1, as on
	// Lambda.
	pol := autoscaler.Policy{ContainerConcurrency: 1}
	switch policy {
	case "fixed10":
		return fixedDriver{keep: 10 * time.Minute}, nil
	case "knative":
		d, err := autoscaler.NewDecider(KnativeConfig(), pol)
		if err != nil {
			return nil, fmt.Errorf("policy knative: %w", err)
		}
		return coreDriver{d}, nil
	case "surge":
		cfg := autoscaler.DefaultConfig()
		if opts.ColdStartCost > 0 {
			cfg.ColdStartCost = opts.ColdStartCost
		}
		d, err := autoscaler.NewDecider(cfg, pol)
		if err != nil {
			return nil, fmt.Errorf("policy surge: %w", err)
		}
		return coreDriver{d}, nil
	}
	return nil, fmt.Errorf("unknown policy %q: want fixed10, knative, surge or all", policy)
}

// KnativeConfig is the decision core set up as Knative's KPA with its
// defaults: the same windows, targets and rates as Surge, no spare replicas
// for bursts (Knative's target-burst-capacity only puts the activator in
// the path), the panic window followed only in panic mode, and a fixed 30s
// scale-to-zero grace instead of the adaptive keep-alive.
func KnativeConfig() autoscaler.Config {
	c := autoscaler.DefaultConfig()
	c.ColdStartCost = 0
	c.ReactionTime = 0
	c.PanicScaleUp = false
	c.ScaleToZeroGrace = 30 * time.Second
	c.KeepAlive.Adaptive = false
	return c
}
