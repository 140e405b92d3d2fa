package autoscaler

import "fmt"

// Reason says which rule set a revision's desired scale. The Decider's
// rules (stable to bound) follow the revision's traffic; the Scaler's
// (initial scale to no traffic) follow its life, a deploy or a rollout, and
// override the Decider's.
type Reason int

const (
	// ReasonStable: the stable window's desired scale.
	ReasonStable Reason = iota
	// ReasonPanic: the panic window's desired scale, or holding the panic
	// peak (no scale-down while panicking).
	ReasonPanic
	// ReasonToZero: no traffic and no reason to keep a replica.
	ReasonToZero
	// ReasonKeepAlive: the metrics ask for zero but the last replica is
	// kept, for the scale-to-zero grace or the keep-alive.
	ReasonKeepAlive
	// ReasonPrewarm: a replica is started (or kept) because the idle-time
	// histogram predicts a use soon.
	ReasonPrewarm
	// ReasonRateLimit: clamped by MaxScaleUpRate or MaxScaleDownRate.
	ReasonRateLimit
	// ReasonBound: clamped by MinReplicas or MaxReplicas.
	ReasonBound

	// ReasonInitialScale: a new revision that takes traffic keeps its
	// initial scale for its first stable window, as Knative's does: long
	// enough to become Ready and take its first requests, rather than
	// being judged idle before it ran.
	ReasonInitialScale
	// ReasonRollingOut: a deploy's latest revision keeps its initial scale
	// (or more, if it has load) until a replica is Ready and the traffic
	// moves to it, for at most ScalerConfig.ProgressDeadline.
	ReasonRollingOut
	// ReasonNotReady: a deploy's latest revision had no Ready replica
	// within ScalerConfig.ProgressDeadline and is given up: zero replicas,
	// while the traffic stays where it was.
	ReasonNotReady
	// ReasonNoTraffic: a revision that takes no traffic any more, and has
	// no tag, drains to zero once its last requests are done, whatever its
	// policy says.
	ReasonNoTraffic
	// ReasonActivation: requests wait in a gateway for replicas (the
	// revision is at zero, or its replicas are all at their limit): the
	// replicas they need (Scaler.Activate) are kept for
	// ScalerConfig.ActivationHold after the last activation, which the
	// gateways repeat while requests wait.
	ReasonActivation
)

// String returns the reason's name. The Scaler's reasons read as prose, as
// a Scale's status has always shown them.
func (r Reason) String() string {
	switch r {
	case ReasonStable:
		return "stable"
	case ReasonPanic:
		return "panic"
	case ReasonToZero:
		return "to-zero"
	case ReasonKeepAlive:
		return "keep-alive"
	case ReasonPrewarm:
		return "pre-warm"
	case ReasonRateLimit:
		return "rate-limit"
	case ReasonBound:
		return "bound"
	case ReasonInitialScale:
		return "initial scale"
	case ReasonRollingOut:
		return "rolling out"
	case ReasonNotReady:
		return "not ready"
	case ReasonNoTraffic:
		return "no traffic"
	case ReasonActivation:
		return "activation"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}
