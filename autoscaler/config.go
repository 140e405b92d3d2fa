package autoscaler

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrInvalidConfig is wrapped by every error Config.Validate and
// Policy.Validate return, so callers can tell a configuration mistake from
// anything else with errors.Is.
var ErrInvalidConfig = errors.New("autoscaler: invalid configuration")

// Config holds the autoscaler-wide defaults: the algorithm's constants and
// the values a revision's Policy falls back to when it leaves a field zero.
// Make one with DefaultConfig and change what you need; Validate reports
// every bad field at once.
type Config struct {
	// SamplePeriod is the period one Sample covers and the width of a bucket
	// of the stable and panic windows. Default 1s, the gateways' reporting
	// period; shorter buckets cost memory (StableWindow/SamplePeriod
	// buckets per revision) and react to nothing faster than the reports.
	SamplePeriod time.Duration

	// StableWindow is the window the stable desired scale averages over.
	// Default 60s (Knative's stable-window). Longer smooths more and keeps
	// replicas longer after traffic drops; shorter follows noise.
	StableWindow time.Duration

	// PanicWindowPercentage is the panic window as a percentage of
	// StableWindow. Default 10 (6s of a 60s window), as in Knative.
	PanicWindowPercentage float64

	// PanicThreshold is the ratio of the panic-window desired scale to the
	// ready replicas at which the autoscaler panics: it then follows the
	// short window and never scales down until StableWindow has passed
	// without crossing the threshold again. Default 2.0 (200% of capacity).
	PanicThreshold float64

	// MaxScaleUpRate bounds one decision to at most MaxScaleUpRate times the
	// ready replicas (at least one ready replica is assumed). Default 1000.
	MaxScaleUpRate float64

	// MaxScaleDownRate bounds one decision to at least ready/MaxScaleDownRate
	// replicas. Default 2: at most halve per decision.
	MaxScaleDownRate float64

	// TargetUtilization is the fraction of a replica's concurrency limit
	// that the concurrency target aims at. Default 0.7: 30% headroom for
	// the noise the window averages away.
	TargetUtilization float64

	// UnlimitedConcurrencyTarget is the in-flight requests per replica the
	// concurrency metric aims at when the revision sets no concurrency limit.
	// Default 100 (Knative's container-concurrency-target-default).
	UnlimitedConcurrencyTarget float64

	// RPSTarget is the requests per second per replica the rps metric aims
	// at when the policy names no value. Default 200, as in Knative.
	RPSTarget float64

	// CPUTarget is the CPU, in cores per replica, the cpu metric aims at
	// when the policy names no value. Default 0.7.
	CPUTarget float64

	// ColdStartCost is the replica time one avoided cold start is worth,
	// the one exchange rate between cold starts and idle replicas. It sets
	// the burst capacity: spare replicas kept above the target so that a
	// burst finds a free replica before requests queue. With demand a
	// in-flight requests arriving at lambda per second, the number of
	// requests in service is Poisson with mean a whatever the service-time
	// distribution (M/G/inf), and a request that finds every slot busy is a
	// cold start; so the k-th slot of capacity saves lambda*P(N=k) cold
	// starts per second. The autoscaler adds capacity while that saving,
	// times ColdStartCost, exceeds the one replica-second per second the
	// slot costs. Steady heavy traffic gets 3 to 4 standard deviations of
	// spare capacity (square-root staffing); a trickle gets none, however
	// long its requests. The adaptive keep-alive uses it too: to choose a
	// keep-alive for functions whose idle times are too spread to predict,
	// and to pre-warm only when the window pays over the idle times seen.
	// More buys fewer cold starts with more idle replicas: it is the dial
	// between the two (go run ./benchmarks/replay -cold-start-cost D shows
	// the trade on a trace). Default 18m: on both held-out halves of the
	// Azure sample Surge then spends at most 1.5x the replica time of
	// Knative's KPA (1.48x and 1.50x; 19m reaches 1.499x on one half and
	// 20m goes over). On the whole sample that is 1.48x, with 2.03x fewer
	// cold starts than Lambda's 10-minute keep-alive (at 13m: 1.43x and
	// 1.76x; at 20m: 1.50x and 2.10x). 0 keeps no
	// spare replicas, as Knative's KPA, whose target-burst-capacity only
	// decides whether the activator buffers.
	ColdStartCost time.Duration

	// ReactionTime is how long the autoscaler takes to add capacity: one
	// SamplePeriod to see the demand plus a replica's start-up. It bounds
	// the burst capacity: within ReactionTime the requests in flight can
	// grow by at most the requests that arrive, Poisson with mean rate *
	// ReactionTime, and capacity beyond that could be started when needed.
	// So spare capacity is at most the requests in flight in the last
	// period plus the arrivals' tail at the ColdStartCost exchange rate
	// (the (s+1)-th spare saves P(arrivals >= s+1) cold starts per
	// ReactionTime). The stationary tail is the smaller bound for short
	// requests; this one for long requests at low rates, where in-flight
	// requests change slowly: one 15s request every 15s gets 3 replicas
	// instead of the stationary tail's 4. On the Azure sample it saves 3%
	// of replica time for 3% more cold starts (the trade ColdStartCost
	// would make at about 2000s a cold start, not 600s). Default 2s (1s
	// period, ~1s start). Longer is more conservative; 0 turns it off.
	ReactionTime time.Duration

	// PanicScaleUp makes the decider scale up on the panic window outside
	// panic mode too, and scale down only on the stable window: the desired
	// scale is never below what the panic window asks. A burst that starts
	// from little traffic then gets replicas within the panic window (6s)
	// instead of waiting for the stable average or for panic mode at
	// PanicThreshold, and replicas a burst's cold starts brought are not
	// torn down while it lasts. It costs replicas on short spikes: a lone
	// request after a quiet spell reads as a rate of one per panic window
	// and may get a spare or two for a few seconds. Default true: on the
	// Azure sample it saves 20% of the cold starts for 2% more replica
	// time, where doubling ColdStartCost saves 22% for 7%. Knative's KPA
	// follows the panic window only in panic mode; the knative replay
	// policy turns it off.
	PanicScaleUp bool

	// ScaleToZeroGrace is how long the last replica is kept after the
	// stable window decided zero, when the keep-alive is fixed (adaptive
	// off). Default 30s (Knative's scale-to-zero-grace-period).
	ScaleToZeroGrace time.Duration

	// KeepAlive configures the adaptive keep-alive and pre-warm.
	KeepAlive KeepAliveConfig
}

// KeepAliveConfig configures the adaptive keep-alive and pre-warm policy of
// Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020): a histogram of
// the idle times between uses predicts when the next use comes.
type KeepAliveConfig struct {
	// Adaptive turns the policy on for revisions whose Policy leaves
	// KeepAlive at KeepAliveDefault. Default true. When off, the last
	// replica is kept for ScaleToZeroGrace after the stable window decided
	// zero, as in Knative; pre-warm is off.
	Adaptive bool

	// BucketWidth is the width of one histogram bucket. Default 1m, as in
	// the paper: finer buckets need more samples to fill. Gaps shorter than
	// a bucket are pauses within a use, not idle times (see IdleTimes).
	BucketWidth time.Duration

	// Range is the longest idle time the histogram holds; longer ones are
	// counted as out of bounds. Default 4h, as in the paper: 240 buckets.
	Range time.Duration

	// HeadPercentile is the percentile of idle times before which the
	// replica is not kept warm (the pre-warm point). Default 5, as in the
	// paper: up to 5% of next uses may come before the pre-warm.
	HeadPercentile float64

	// TailPercentile is the percentile of idle times after which the
	// replica is released (the end of the keep-alive). Default 99, as in
	// the paper. Without a ColdStartCost it is also the percentile of
	// pauses after which a use is over; with one, the use is over after
	// the cheapest linger at that price (see Prediction.Linger): a rare
	// long pause is worth waiting out when uses are few.
	TailPercentile float64

	// Margin widens the predicted window on both sides: pre-warm at
	// head*(1-Margin), release at tail*(1+Margin); it also covers the
	// replica's start-up time. Default 0.05, half the paper's 10%: idle
	// times are measured to the second here, not to the minute as in the
	// paper's trace, and the minute buckets already widen the window by up
	// to a bucket. On the Azure sample (at ColdStartCost 13m) the paper's
	// 10% costs 1.6% more replica time (a timer every 5 minutes holds its
	// replica 14% longer) for 0.7% fewer cold starts, a trade ColdStartCost
	// would make at about 9000s a cold start.
	Margin float64

	// MinSamples is the number of idle times (out of bounds included) the
	// histogram needs before it is used; until then the keep-alive is
	// Fixed, and a replica is pre-warmed again around the idle times seen
	// so far (see Prediction.RepeatFrom), which catches periodic callers
	// from their third use. Default 3. Fewer make the MaxCV test
	// unreliable (3 idle times of memoryless arrivals pass it 30% of the
	// time, 5 13%); more delay learning: a function called every hour
	// would wait most of a working day. An early mistake does not last, as
	// every new idle time re-tests the histogram. On the Azure sample,
	// waiting for 5 saves under 1% of the cold starts for 1% more replica
	// time, a worse trade than ColdStartCost makes.
	MinSamples int

	// MaxCV is the largest coefficient of variation (standard deviation
	// over mean) of the idle times for which they are predictable enough
	// to pre-warm or to keep a replica until the tail. Memoryless (Poisson)
	// arrivals have a CV of 1: the time since the last use says nothing of
	// the next. Default 0.5: 10 exponential idle times fall below it with
	// probability about 2% (20 almost never), while timers (CV near 0)
	// pass. Spread idle times get the keep-alive that ColdStartCost makes
	// cheapest over them instead (see IdleHistogram.Predict). Shahrad et
	// al. test the CV of the bucket counts instead, which needs hundreds of
	// idle times: n idle times in distinct buckets show a CV of
	// sqrt(buckets/n-1) however spread they are.
	MaxCV float64

	// MaxOutOfBounds is the largest fraction of idle times longer than
	// Range for which the histogram is used; above it the revision is
	// released right after each use and not pre-warmed, since keeping a
	// replica for longer than Range would cost more than a cold start.
	// Default 0.5. (The paper forecasts such functions with ARIMA; Surge
	// does not.)
	MaxOutOfBounds float64

	// Fixed is the keep-alive after the last use while the histogram has
	// fewer than MinSamples idle times. Default 10m, Lambda's keep-alive:
	// a function Surge does not know yet costs what it costs on Lambda.
	// Keeping a replica as long as a cold start is worth (ColdStartCost)
	// is also the break-even rule of ski rental: never more than twice
	// the cost of the best choice in hindsight.
	Fixed time.Duration
}

// DefaultConfig returns Surge's defaults, documented on each field: the
// Knative KPA constants, plus burst capacity (ColdStartCost) and the
// adaptive keep-alive.
func DefaultConfig() Config {
	return Config{
		SamplePeriod:               time.Second,
		StableWindow:               60 * time.Second,
		PanicWindowPercentage:      10,
		PanicThreshold:             2,
		MaxScaleUpRate:             1000,
		MaxScaleDownRate:           2,
		TargetUtilization:          0.7,
		UnlimitedConcurrencyTarget: 100,
		RPSTarget:                  200,
		CPUTarget:                  0.7,
		ColdStartCost:              18 * time.Minute,
		ReactionTime:               2 * time.Second,
		PanicScaleUp:               true,
		ScaleToZeroGrace:           30 * time.Second,
		KeepAlive: KeepAliveConfig{
			Adaptive:       true,
			BucketWidth:    time.Minute,
			Range:          4 * time.Hour,
			HeadPercentile: 5,
			TailPercentile: 99,
			Margin:         0.05,
			MinSamples:     3,
			MaxCV:          0.5,
			MaxOutOfBounds: 0.5,
			Fixed:          10 * time.Minute,
		},
	}
}

// maxBuckets bounds the window and histogram sizes so that a typo (a window
// of 60h at 1ms) is reported instead of allocating gigabytes.
const maxBuckets = 1 << 20

// Validate reports every invalid field of c, each with its name and value,
// joined in one error that wraps ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, value any, why string) {
		errs = append(errs, fmt.Errorf("%w: %s = %v: %s", ErrInvalidConfig, field, value, why))
	}
	positive := func(field string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			bad(field, v, "must be a positive number")
		}
	}
	if c.SamplePeriod <= 0 {
		bad("SamplePeriod", c.SamplePeriod, "must be positive")
	}
	if c.StableWindow < c.SamplePeriod || c.SamplePeriod > 0 && c.StableWindow/c.SamplePeriod > maxBuckets {
		bad("StableWindow", c.StableWindow, fmt.Sprintf("must be between SamplePeriod and %d sample periods", maxBuckets))
	}
	if !(c.PanicWindowPercentage > 0 && c.PanicWindowPercentage <= 100) {
		bad("PanicWindowPercentage", c.PanicWindowPercentage, "must be in (0, 100]")
	}
	if !(c.PanicThreshold > 1) || math.IsInf(c.PanicThreshold, 0) {
		bad("PanicThreshold", c.PanicThreshold, "must be greater than 1")
	}
	if !(c.MaxScaleUpRate > 1) || math.IsInf(c.MaxScaleUpRate, 0) {
		bad("MaxScaleUpRate", c.MaxScaleUpRate, "must be greater than 1")
	}
	if !(c.MaxScaleDownRate > 1) || math.IsInf(c.MaxScaleDownRate, 0) {
		bad("MaxScaleDownRate", c.MaxScaleDownRate, "must be greater than 1")
	}
	if !(c.TargetUtilization > 0 && c.TargetUtilization <= 1) {
		bad("TargetUtilization", c.TargetUtilization, "must be in (0, 1]")
	}
	positive("UnlimitedConcurrencyTarget", c.UnlimitedConcurrencyTarget)
	positive("RPSTarget", c.RPSTarget)
	positive("CPUTarget", c.CPUTarget)
	if c.ColdStartCost < 0 {
		bad("ColdStartCost", c.ColdStartCost, "must not be negative")
	}
	if c.ReactionTime < 0 {
		bad("ReactionTime", c.ReactionTime, "must not be negative")
	}
	if c.ScaleToZeroGrace < 0 {
		bad("ScaleToZeroGrace", c.ScaleToZeroGrace, "must not be negative")
	}
	errs = append(errs, c.KeepAlive.validate()...)
	return errors.Join(errs...)
}

func (k KeepAliveConfig) validate() []error {
	var errs []error
	bad := func(field string, value any, why string) {
		errs = append(errs, fmt.Errorf("%w: KeepAlive.%s = %v: %s", ErrInvalidConfig, field, value, why))
	}
	if k.BucketWidth <= 0 {
		bad("BucketWidth", k.BucketWidth, "must be positive")
	}
	if k.Range < k.BucketWidth || k.BucketWidth > 0 && k.Range/k.BucketWidth > maxBuckets {
		bad("Range", k.Range, fmt.Sprintf("must be between BucketWidth and %d buckets", maxBuckets))
	}
	if !(k.HeadPercentile >= 0 && k.HeadPercentile < 100) {
		bad("HeadPercentile", k.HeadPercentile, "must be in [0, 100)")
	}
	if !(k.TailPercentile > 0 && k.TailPercentile <= 100) || k.TailPercentile < k.HeadPercentile {
		bad("TailPercentile", k.TailPercentile, "must be in (0, 100] and not below HeadPercentile")
	}
	if !(k.Margin >= 0 && k.Margin < 1) {
		bad("Margin", k.Margin, "must be in [0, 1)")
	}
	if k.MinSamples < 1 {
		bad("MinSamples", k.MinSamples, "must be at least 1")
	}
	if !(k.MaxCV >= 0) || math.IsInf(k.MaxCV, 0) {
		bad("MaxCV", k.MaxCV, "must be zero or a positive number")
	}
	if !(k.MaxOutOfBounds >= 0 && k.MaxOutOfBounds <= 1) {
		bad("MaxOutOfBounds", k.MaxOutOfBounds, "must be in [0, 1]")
	}
	if k.Fixed < 0 {
		bad("Fixed", k.Fixed, "must not be negative")
	}
	return errs
}

// Metric names a signal a revision scales on.
type Metric string

// The metrics a Policy may name.
const (
	// MetricConcurrency is in-flight plus queued requests (Sample.Concurrency
	// + Sample.Queued); its target is requests per replica.
	MetricConcurrency Metric = "concurrency"
	// MetricRPS is requests per second (Sample.Requests per SamplePeriod);
	// its target is requests per second per replica.
	MetricRPS Metric = "rps"
	// MetricCPU is CPU in use (Sample.CPU, cores summed over replicas); its
	// target is cores per replica. It scales up only while there is
	// traffic, so idle background CPU never holds a revision above zero.
	MetricCPU Metric = "cpu"
)

// Target is one metric a Policy scales on, with the value per replica it
// aims at.
type Target struct {
	// Metric is the signal.
	Metric Metric
	// Value is the target per replica; 0 takes the Config's default for
	// the metric (for concurrency: TargetUtilization times the
	// concurrency limit, or UnlimitedConcurrencyTarget without a limit).
	Value float64
}

// KeepAliveMode chooses how a revision's last replica is kept between uses.
type KeepAliveMode int

const (
	// KeepAliveDefault follows Config.KeepAlive.Adaptive.
	KeepAliveDefault KeepAliveMode = iota
	// KeepAliveFixed keeps the last replica ScaleToZeroGrace after the
	// stable window decided zero, as Knative does.
	KeepAliveFixed
	// KeepAliveAdaptive predicts the next use from the idle-time histogram.
	KeepAliveAdaptive
)

// String returns the mode's name.
func (m KeepAliveMode) String() string {
	switch m {
	case KeepAliveDefault:
		return "default"
	case KeepAliveFixed:
		return "fixed"
	case KeepAliveAdaptive:
		return "adaptive"
	}
	return fmt.Sprintf("KeepAliveMode(%d)", int(m))
}

// Policy is a revision's scaling policy, from its Function spec. Zero
// fields take the Config's defaults.
type Policy struct {
	// MinReplicas is the fewest replicas; above zero the revision never
	// scales to zero.
	MinReplicas int
	// MaxReplicas is the most replicas; 0 means no bound.
	MaxReplicas int
	// ContainerConcurrency is the per-replica concurrency limit; 0 means
	// unlimited.
	ContainerConcurrency int
	// Targets are the metrics to scale on; the desired scale is the largest
	// any of them asks for. Empty means concurrency at its default target.
	Targets []Target
	// StableWindow overrides Config.StableWindow when positive.
	StableWindow time.Duration
	// ScaleToZeroGrace overrides Config.ScaleToZeroGrace when positive.
	ScaleToZeroGrace time.Duration
	// KeepAlive chooses fixed or adaptive keep-alive for this revision.
	KeepAlive KeepAliveMode
}

// Validate reports every invalid field of p, joined in one error that wraps
// ErrInvalidConfig.
func (p Policy) Validate() error {
	var errs []error
	bad := func(field string, value any, why string) {
		errs = append(errs, fmt.Errorf("%w: policy %s = %v: %s", ErrInvalidConfig, field, value, why))
	}
	if p.MinReplicas < 0 {
		bad("MinReplicas", p.MinReplicas, "must not be negative")
	}
	if p.MaxReplicas < 0 {
		bad("MaxReplicas", p.MaxReplicas, "must not be negative")
	}
	if p.MaxReplicas > 0 && p.MinReplicas > p.MaxReplicas {
		bad("MinReplicas", p.MinReplicas, fmt.Sprintf("must not exceed MaxReplicas (%d)", p.MaxReplicas))
	}
	if p.ContainerConcurrency < 0 {
		bad("ContainerConcurrency", p.ContainerConcurrency, "must not be negative")
	}
	seen := map[Metric]bool{}
	for i, t := range p.Targets {
		switch t.Metric {
		case MetricConcurrency, MetricRPS, MetricCPU:
		default:
			bad(fmt.Sprintf("Targets[%d].Metric", i), t.Metric, "must be concurrency, rps or cpu")
		}
		if seen[t.Metric] {
			bad(fmt.Sprintf("Targets[%d].Metric", i), t.Metric, "is named twice")
		}
		seen[t.Metric] = true
		if !(t.Value >= 0) || math.IsInf(t.Value, 0) {
			bad(fmt.Sprintf("Targets[%d].Value", i), t.Value, "must be zero (default) or a positive number")
		}
	}
	if p.StableWindow < 0 {
		bad("StableWindow", p.StableWindow, "must not be negative")
	}
	if p.ScaleToZeroGrace < 0 {
		bad("ScaleToZeroGrace", p.ScaleToZeroGrace, "must not be negative")
	}
	if p.KeepAlive < KeepAliveDefault || p.KeepAlive > KeepAliveAdaptive {
		bad("KeepAlive", p.KeepAlive, "must be default, fixed or adaptive")
	}
	return errors.Join(errs...)
}
