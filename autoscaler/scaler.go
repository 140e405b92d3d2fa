package autoscaler

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/surgeplatform/surge/api"
)

// compareKeys orders revisions by namespace, then name.
func compareKeys(a, b api.Key) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// Load is one revision's demand over the last sample period, summed over
// the gateways.
type Load struct {
	// Sample is what the revision's Decider records.
	Sample Sample
	// RPS is the requests per second, each gateway's requests over its own
	// window: the rate to show, as the Sample counts requests per period.
	RPS float64
}

// ScalerConfig configures a Scaler. Make one with DefaultScalerConfig;
// NewScaler reports every bad field at once.
type ScalerConfig struct {
	// Decider is the configuration of every revision's Decider.
	Decider Config
	// ProgressDeadline is how long a deploy's revision keeps its initial
	// scale while it has never had a Ready replica and so takes no
	// traffic (a missing image, a crash at start-up). After it the
	// revision is given up and scaled to zero, as Knative's
	// progress-deadline does, and the traffic stays where it was. Default
	// 10m, Knative's: long enough for a slow image pull; shorter frees a
	// broken deploy's replicas sooner.
	ProgressDeadline time.Duration
	// ActivationHold is how long an activation (requests waiting in a
	// gateway for a revision at zero, or for one whose replicas are all at
	// their limit) counts as its demand in flight, when the gateways
	// report less for the revision: as long as their reports may take to
	// show the requests. Default 3s, the runner's StatsMaxAge. Shorter
	// risks scaling the revision straight back down; longer keeps
	// replicas for requests that went away.
	ActivationHold time.Duration
	// MaxReplicas is the cluster's bound on one revision's replicas, what
	// a function without a maxScale of its own (0) gets, and the most any
	// maxScale gets; 0 means none. The API server bounds maxScale by the
	// same figure (its Limits.MaxReplicas), so a report of load, however
	// large, asks for no more.
	MaxReplicas int
}

// DefaultScalerConfig returns the defaults documented on each field.
func DefaultScalerConfig() ScalerConfig {
	return ScalerConfig{Decider: DefaultConfig(), ProgressDeadline: 10 * time.Minute, ActivationHold: 3 * time.Second}
}

// Validate reports every invalid field of c, joined in one error that
// wraps ErrInvalidConfig.
func (c ScalerConfig) Validate() error {
	var errs []error
	if err := c.Decider.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ProgressDeadline <= 0 {
		errs = append(errs, fmt.Errorf("%w: ProgressDeadline = %v: must be positive", ErrInvalidConfig, c.ProgressDeadline))
	}
	if c.ActivationHold < 0 {
		errs = append(errs, fmt.Errorf("%w: ActivationHold = %v: must not be negative", ErrInvalidConfig, c.ActivationHold))
	}
	return errors.Join(errs...)
}

// Input is one tick's view of the cluster, as the caller read it. Read
// Functions before Traffic: a rollout that ends between the two reads then
// leaves its revision rolling out or serving, never neither (which would
// read as no traffic and scale it to zero).
type Input struct {
	// Scales are the revisions to decide: each that has a Revision too.
	// Their ReadyReplicas are what each decision starts from.
	Scales []api.Scale
	// Revisions give each revision's spec and creation time.
	Revisions []api.Revision
	// Functions give each function's latest revision, which rolls out
	// until it is the latest Ready one.
	Functions []api.Function
	// Traffic says which revisions serve: those with a target above 0%,
	// and those with a tag, which answer at their own host whatever their
	// share.
	Traffic []api.Traffic
	// Load is the gateways' demand per revision; a revision missing from
	// it had none.
	Load map[api.Key]Load
}

// RevisionDecision is the scale one revision should have, and why.
type RevisionDecision struct {
	// Revision names the revision, and so its Scale.
	Revision api.Key
	// Function is the revision's function.
	Function string
	// Desired is the replica count the revision's Scale should ask for.
	Desired int32
	// Reason is the rule that set Desired.
	Reason Reason
	// Panic reports whether the revision's Decider is in panic mode.
	Panic bool
	// Load is the demand the Decider recorded: the gateways', or a recent
	// activation's demand when they do not show that much yet.
	Load Load
	// ProgressDeadline is the deadline a revision given up
	// (ReasonNotReady) missed; zero for every other reason.
	ProgressDeadline time.Duration
}

// StatusReason is the reason as a Scale's status shows it: Reason's name,
// and for a revision given up the deadline it missed ("not ready in
// 10m0s"), so that an operator sees which setting to change.
func (d RevisionDecision) StatusReason() string {
	if d.Reason == ReasonNotReady {
		return fmt.Sprintf("not ready in %s", d.ProgressDeadline)
	}
	return d.Reason.String()
}

// Result is the outcome of one Decide call.
type Result struct {
	// Revisions holds a decision for every revision decided, in the order
	// of Input.Scales.
	Revisions []RevisionDecision
	// Gone lists, sorted, the revisions decided before that are not in the
	// Input any more. Their state is dropped; the caller may drop what it
	// keeps of them (metrics series) too.
	Gone []api.Key
}

// Scaler decides the scale of every revision, tick by tick: each
// revision's Decider follows its traffic, and the rules of a revision's
// life override it (see the Reason values from ReasonInitialScale on). It
// keeps one Decider per revision and the recent activations between
// calls, and does no I/O, starts no goroutines and reads no clock: the
// caller reads the cluster, passes it and the time in, and writes the
// decisions out. A Scaler is not safe for concurrent use.
type Scaler struct {
	cfg       ScalerConfig
	deciders  map[api.Key]*Decider
	activated map[api.Key]activation
}

// activation is the last demand a gateway asked replicas for, and when.
type activation struct {
	at     time.Time
	demand int
}

// NewScaler returns a Scaler with no revisions yet. It returns an error
// wrapping ErrInvalidConfig, naming every bad field, when cfg is invalid.
func NewScaler(cfg ScalerConfig) (*Scaler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new scaler: %w", err)
	}
	return &Scaler{cfg: cfg, deciders: map[api.Key]*Decider{}, activated: map[api.Key]activation{}}, nil
}

// Activate records that a gateway holds demand requests of revision rev
// that its replicas cannot take (it is at zero, or every replica is at its
// concurrency limit), at now, and returns the replicas that demand needs
// at once (see Decider.ActivationScale): the caller raises the revision's
// Scale to it without waiting for the next Decide. For ActivationHold the
// decisions count the demand as requests in flight, when the gateways'
// reports show less, and ask for no fewer replicas than it needs
// (ReasonActivation), so that they neither scale the revision straight
// back nor below what the activation asked for. Within the hold the
// largest demand counts. It returns an error, and records
// nothing, when the revision's spec makes an invalid policy.
func (s *Scaler) Activate(now time.Time, rev *api.Revision, demand int) (int32, error) {
	k := api.Key{Namespace: rev.Metadata.Namespace, Name: rev.Metadata.Name}
	d, err := s.decider(k, rev)
	if err != nil {
		return 0, err
	}
	demand = max(demand, 1)
	if a, ok := s.activated[k]; ok && now.Sub(a.at) < s.cfg.ActivationHold {
		demand = max(demand, a.demand)
	}
	s.activated[k] = activation{at: now, demand: demand}
	return int32(d.ActivationScale(float64(demand))), nil
}

// Decide returns the scale of every revision in in at now. Call it once per
// Config.SamplePeriod of the Decider, with now increasing. It decides every
// revision it can; the error joins, one per revision, those whose spec
// makes an invalid policy, which get no decision.
func (s *Scaler) Decide(now time.Time, in Input) (Result, error) {
	rollingOut := map[api.Key]bool{}
	for _, f := range in.Functions {
		if latest := f.Status.LatestRevision; latest != "" && latest != f.Status.LatestReadyRevision {
			rollingOut[api.Key{Namespace: f.Metadata.Namespace, Name: latest}] = true
		}
	}
	serving := map[api.Key]bool{}
	for _, t := range in.Traffic {
		for _, tt := range t.Spec.Targets {
			if tt.Percent > 0 || tt.Tag != "" {
				serving[api.Key{Namespace: t.Metadata.Namespace, Name: tt.Revision}] = true
			}
		}
	}
	revs := make(map[api.Key]*api.Revision, len(in.Revisions))
	for i := range in.Revisions {
		revs[api.Key{Namespace: in.Revisions[i].Metadata.Namespace, Name: in.Revisions[i].Metadata.Name}] = &in.Revisions[i]
	}

	var res Result
	var errs []error
	seen := make(map[api.Key]bool, len(in.Scales))
	for i := range in.Scales {
		sc := &in.Scales[i]
		k := api.Key{Namespace: sc.Metadata.Namespace, Name: sc.Metadata.Name}
		rev := revs[k]
		if rev == nil {
			continue
		}
		seen[k] = true
		d, err := s.decider(k, rev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Revisions = append(res.Revisions, s.decide(now, k, rev, d, int(sc.Status.ReadyReplicas), in.Load[k], serving[k], rollingOut[k]))
	}
	for k := range s.deciders {
		if !seen[k] {
			delete(s.deciders, k)
			delete(s.activated, k)
			res.Gone = append(res.Gone, k)
		}
	}
	slices.SortFunc(res.Gone, compareKeys)
	for k, a := range s.activated {
		if now.Sub(a.at) >= s.cfg.ActivationHold {
			delete(s.activated, k) // it will never count again
		}
	}
	return res, errors.Join(errs...)
}

// decider returns revision k's Decider, made on first sight. Revisions are
// immutable, so its policy never changes.
func (s *Scaler) decider(k api.Key, rev *api.Revision) (*Decider, error) {
	if d, ok := s.deciders[k]; ok {
		return d, nil
	}
	d, err := NewDecider(s.cfg.Decider, policyFor(&rev.Spec.Template, s.cfg.MaxReplicas))
	if err != nil {
		return nil, fmt.Errorf("decide revision %s: %w", k, err)
	}
	s.deciders[k] = d
	return d, nil
}

// decide feeds one revision's load to its Decider and applies the rules of
// the revision's life to the Decider's decision. Their order is their
// precedence: each later rule overrides the earlier ones.
func (s *Scaler) decide(now time.Time, k api.Key, rev *api.Revision, d *Decider, ready int, l Load, serving, rollingOut bool) RevisionDecision {
	var ask int32
	if a, ok := s.activated[k]; ok && now.Sub(a.at) < s.cfg.ActivationHold {
		// Requests wait in a gateway for replicas of this revision; the
		// gateways' reports may not have caught up yet, and the Decider's
		// windows average a burst down: the replicas the activation asked
		// for stay asked for.
		demand := float64(a.demand)
		l.Sample.Concurrency = max(l.Sample.Concurrency, demand)
		l.Sample.Requests = max(l.Sample.Requests, demand)
		ask = int32(d.ActivationScale(demand))
	}
	d.Record(now, l.Sample)
	dec := d.Scale(now, ready)
	out := RevisionDecision{
		Revision: k, Function: rev.Spec.Function,
		Desired: int32(dec.Desired), Reason: dec.Reason, Panic: dec.Panic, Load: l,
	}
	if out.Desired < ask {
		out.Desired, out.Reason = ask, ReasonActivation
	}
	initial, age := api.InitialScale(&rev.Spec.Template), now.Sub(rev.Metadata.CreationTimestamp)
	if out.Desired < initial && serving && age < d.stableW {
		out.Desired, out.Reason = initial, ReasonInitialScale
	}
	switch {
	case rollingOut && !serving && age < s.cfg.ProgressDeadline:
		out.Desired, out.Reason = max(out.Desired, initial), ReasonRollingOut
	case rollingOut && !serving:
		out.Desired, out.Reason, out.ProgressDeadline = 0, ReasonNotReady, s.cfg.ProgressDeadline
	case !serving && l.Sample.Concurrency == 0 && l.Sample.Requests == 0:
		out.Desired, out.Reason = 0, ReasonNoTraffic
	}
	return out
}
