// Package autoscaler is Surge's scaling decision core. It does no I/O,
// starts no goroutines and reads no clock; the caller passes the time in.
//
// A Decider turns one revision's per-second traffic samples into a desired
// replica count and the reason for it. A Scaler keeps a Decider per
// revision and decides every revision of the cluster at once, overriding
// the Deciders with the rules of a revision's life: its initial scale, a
// deploy rolling out or given up, a revision that no longer takes traffic,
// and a request waiting at zero. The live runner, controlplane/autoscaling,
// reads the cluster and the gateways' load every second on the leader,
// calls the Scaler, and writes the desired counts to the Scale objects:
//
//	s, err := autoscaler.NewScaler(autoscaler.DefaultScalerConfig())
//	...
//	// every second:
//	res, err := s.Decide(now, autoscaler.Input{Scales: ..., Revisions: ..., Functions: ..., Traffic: ..., Load: ...})
//	// write each res.Revisions[i].Desired, with its StatusReason
//
// A Decider alone, as benchmarks/replay drives it:
//
//	d, err := autoscaler.NewDecider(autoscaler.DefaultConfig(), policy) // one per revision
//	...
//	// every second, for every revision:
//	d.Record(now, autoscaler.Sample{Concurrency: c, Queued: q, Requests: n}) // summed over gateways
//	dec := d.Scale(now, readyReplicas)
//	// write dec.Desired; log dec.Reason
//
// # Metric-driven scale (Knative KPA)
//
// The algorithm follows the KPA of Knative Serving
// (pkg/autoscaler/scaling): samples go into per-second buckets of a
// stable window (StableWindow, 60s) and a panic window (10% of it). Each
// metric of the policy (concurrency, rps, cpu) asks for
// ceil(window average / target per replica) replicas and the largest ask
// wins. The concurrency target is TargetUtilization (70%) of the
// per-replica concurrency limit, or UnlimitedConcurrencyTarget (100)
// without a limit. When the panic window asks for PanicThreshold (200%) of
// the ready replicas, the decider panics: it follows the panic window and
// never scales down until a stable window has passed without crossing the
// threshold. One decision moves at most MaxScaleUpRate (1000x) up and
// MaxScaleDownRate (2x) down from the ready replicas; MinReplicas and
// MaxReplicas bound the result. CPU only counts while there is traffic, so
// an idle revision still scales to zero.
//
// # Burst capacity
//
// With one request per replica (Lambda-like functions) a replica count at
// the target still turns many requests into cold starts, because Poisson
// arrivals bunch up. The number of requests in service is Poisson with the
// observed concurrency as mean, whatever the service times (M/G/inf), so
// the decider adds spare capacity while the cold starts the next slot
// saves, times ColdStartCost, are worth more than the slot: square-root
// staffing (Halfin and Whitt, 1981) with the confidence set by the price
// of a cold start. That stationary tail ignores what the decider knows
// now: it adds capacity every SamplePeriod, so a spare slot only saves a
// cold start if more requests arrive within ReactionTime (a period plus a
// replica's start-up, 2s) than the spare can take. Spare capacity is
// therefore also bounded by the requests in flight in the last period
// plus the Poisson tail of the arrivals in ReactionTime, at the same
// price. Short requests keep the stationary tail (what is in flight now
// says little about 2s later); long requests at low rates, which change
// slowly, get a spare or two over what is running.
//
// PanicScaleUp (on by default; Knative never does it) also scales up on
// the panic window outside panic mode, scaling down only on the stable
// window: fewer cold starts at the start of bursts, for more replicas.
// Spare capacity is always priced on the stable window's arrival rate:
// six seconds hold too few arrivals to estimate one.
//
// # Scale to zero, keep-alive and pre-warm
//
// With the adaptive keep-alive off, the last replica is kept for
// ScaleToZeroGrace after the stable window decided zero, as in Knative.
// With it on, the decider follows the hybrid histogram policy of Shahrad
// et al., "Serverless in the Wild: Characterizing and Optimizing the
// Serverless Workload at a Large Cloud Provider" (USENIX ATC 2020). It
// learns the revision's idle times between uses in 1-minute buckets over 4
// hours (IdleHistogram), and pauses shorter than a bucket as part of a use
// (IdleTimes). Then, after each use:
//
//   - while it has fewer than MinSamples idle times, it keeps one replica
//     for the fixed keep-alive (10 minutes, as Lambda), and pre-warms
//     again from the shortest to the longest idle time seen, widened by
//     Margin (5%), so that a periodic caller is warm from its third use
//     (unless that window is longer than ColdStartCost: it saves one cold
//     start at most);
//   - when most idle times are beyond 4 hours, it releases the replicas
//     once a use is over: after a pause longer than the use's pauses
//     (the linger, at most a minute, chosen so that what it keeps after
//     every use costs less than the cold starts it saves);
//   - when the idle times are predictable (coefficient of variation at
//     most MaxCV), it releases the replicas once the use is over and
//     starts as many as the use needed again at the 5th percentile of the
//     idle times less 5%, keeping them until the 99th percentile plus
//     5% (or, when the 5th percentile is within a minute, keeps one
//     replica until then), if that window would have cost less replica
//     time over the idle times seen than ColdStartCost per cold start it
//     saved, and releases without pre-warm otherwise;
//   - otherwise it keeps one replica for the keep-alive that minimises
//     replica time plus ColdStartCost per cold start over the idle times
//     seen, releasing at once when no keep-alive pays.
//
// A Decider's reasons tell which rule decided: stable, panic, to-zero,
// keep-alive, pre-warm, rate-limit or bound.
//
// # A revision's life (Scaler)
//
// On top of its Decider, in this order of precedence (each later rule
// overrides the earlier ones):
//
//   - requests a gateway holds for a revision at zero, or for one whose
//     replicas are all at their limit, count as in flight for
//     ActivationHold, until the gateways' reports show them (Activate; it
//     also returns the replicas they need at once, which the API server
//     asks for without waiting for the next tick);
//   - a new revision that takes traffic keeps its initial scale (MinScale,
//     at least one) for its first stable window, as Knative's does;
//   - a deploy's latest revision keeps its initial scale (or more, with
//     load) until it has a Ready replica and the traffic moves to it
//     ("rolling out"), and is given up at zero after ProgressDeadline
//     ("not ready in 10m0s"), as Knative's progress deadline;
//   - a revision that takes no traffic drains to zero once the gateways
//     show no requests for it ("no traffic"), whatever its policy says.
//
// The replay in benchmarks/replay drives this package with a simulated
// clock over the Azure Functions trace to compare these choices with
// Lambda's fixed keep-alive and Knative's defaults.
package autoscaler
