package api

import (
	"time"
)

// Version is the API version served under /v1.
const Version = "v1"

// DefaultNamespace is the namespace of an object that names none.
const DefaultNamespace = "default"

// DefaultPort is the port a function listens on unless its spec says
// otherwise; it is passed to the container as $PORT.
const DefaultPort = 8080

// LabelFunction is the label that names the Function an object belongs to.
const LabelFunction = "surge.dev/function"

// LabelRevision is the label that names the Revision an object belongs to.
const LabelRevision = "surge.dev/revision"

// Kinds of object, as they appear in the kind field and in watch events.
const (
	KindFunction = "Function"
	KindRevision = "Revision"
	KindTraffic  = "Traffic"
	KindScale    = "Scale"
	KindReplica  = "Replica"
	KindNode     = "Node"
	// KindPullSecret is a private registry's credentials.
	KindPullSecret = "PullSecret"
)

// Object is implemented by every API object.
type Object interface {
	// GetMetadata returns the object's metadata, for the store to read and set.
	GetMetadata() *ObjectMeta
	// ObjectKind returns the object's kind; it reads nothing of the
	// object, so a nil or zero object answers too.
	ObjectKind() Kind
}

// ObjectMeta is the metadata every object carries.
type ObjectMeta struct {
	// Name is unique per kind and namespace: a DNS-1123 label.
	Name string `json:"name"`
	// Namespace groups objects; empty means DefaultNamespace. Nodes have none.
	Namespace string `json:"namespace,omitempty"`
	// UID is set by the server at creation and never changes.
	UID string `json:"uid,omitempty"`
	// ResourceVersion is the etcd mod revision of the object, as a decimal
	// string. A replace that carries one succeeds only if it is current.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation counts changes of the spec; for a Function it is also the
	// number of its latest Revision.
	Generation int64 `json:"generation,omitempty"`
	// CreationTimestamp is set by the server at creation.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `json:"labels,omitempty"`
}

// EnvVar is one environment variable of a function's container.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Resources are what one replica asks for: the scheduler reserves them and
// the node agent enforces them as cgroup limits.
type Resources struct {
	// CPU in cores, as "250m" or "1.5". Empty means the default (100m).
	CPU string `json:"cpu,omitempty"`
	// Memory in bytes, as "128Mi", "1Gi" or "500M". Empty means the default (128Mi).
	Memory string `json:"memory,omitempty"`
}

// Probe says how a replica's readiness is checked.
type Probe struct {
	// Path is probed with HTTP GET; empty means a TCP connect only.
	Path string `json:"path,omitempty"`
	// Period between probes once the replica is Ready, e.g. "10s"; zero
	// means the node agent's default.
	Period Duration `json:"period,omitzero"`
}

// Scaling metrics.
const (
	MetricConcurrency = "concurrency"
	MetricRPS         = "rps"
)

// ScalingPolicy bounds and steers the autoscaler for one function.
type ScalingPolicy struct {
	// MinScale is the fewest replicas kept, even when idle. 0 allows scale to zero.
	MinScale int32 `json:"minScale,omitempty"`
	// MaxScale is the most replicas; 0 means no limit.
	MaxScale int32 `json:"maxScale,omitempty"`
	// Metric is what the autoscaler targets: "concurrency" (default) or "rps".
	Metric string `json:"metric,omitempty"`
	// Target is the value of Metric one replica should carry; 0 means the
	// autoscaler's default (70% of the concurrency limit, or 100).
	Target float64 `json:"target,omitempty"`
	// ScaleToZeroGrace is how long an idle revision keeps its last replica,
	// e.g. "30s"; zero means the autoscaler's default.
	ScaleToZeroGrace Duration `json:"scaleToZeroGrace,omitzero"`
	// StableWindow is how much history the autoscaler averages over, e.g.
	// "60s" (Knative's window); shorter follows load faster and flaps more.
	// Zero means the autoscaler's default.
	StableWindow Duration `json:"stableWindow,omitzero"`
}

// FunctionSpec is what a user deploys. Every Revision holds a copy of it.
type FunctionSpec struct {
	// Image is an OCI image reference, e.g. "registry.example/hello:v1".
	Image string `json:"image"`
	// Command replaces the image's entrypoint when set.
	Command []string `json:"command,omitempty"`
	// Args replace the image's arguments when set.
	Args []string `json:"args,omitempty"`
	// Env is passed to the container, after PORT.
	Env []EnvVar `json:"env,omitempty"`
	// Port the function listens on; 0 means DefaultPort.
	Port int32 `json:"port,omitempty"`
	// Resources one replica asks for.
	Resources Resources `json:"resources,omitzero"`
	// Concurrency is how many requests one replica serves at once; 0 means no limit.
	Concurrency int32 `json:"concurrency,omitempty"`
	// QueueDepth is how many of the function's requests may wait in each
	// gateway for a replica with room (a burst from zero, or more than its
	// replicas hold); more are answered 503 with Retry-After. 0 means the
	// gateway's own bound (`surge gateway --queue-depth`).
	QueueDepth int32 `json:"queueDepth,omitempty"`
	// Timeout bounds one request, e.g. "30s"; zero means DefaultTimeout.
	Timeout Duration `json:"timeout,omitzero"`
	// Readiness says how to tell that a replica can serve.
	Readiness *Probe `json:"readiness,omitempty"`
	// Scaling steers the autoscaler.
	Scaling ScalingPolicy `json:"scaling,omitzero"`
	// ImagePullSecrets names the PullSecrets of the function's namespace
	// that nodes may use to pull Image. Empty means every PullSecret of
	// the namespace whose registry is Image's.
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
	// NodeSelector, when set, limits the function's replicas to the nodes
	// whose labels hold every one of these pairs (Kubernetes'
	// nodeSelector), e.g. {"disk": "ssd"}. Empty means any node.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Canary, when set, makes the function's next revisions take the
	// traffic step by step, judged by the rollout controller; nil moves
	// all of it at once when the revision has a Ready replica. It is not
	// part of the revisions (RevisionTemplate): changing it alone makes
	// none.
	Canary *CanaryStrategy `json:"canary,omitempty"`
	// KeepRevisions, when above 0, is how many of the function's
	// revisions that take no traffic and have no tag the rollout
	// controller keeps, the newest; it deletes older ones. 0 keeps every
	// revision. Not part of the revisions either.
	KeepRevisions int32 `json:"keepRevisions,omitempty"`
	// HTTPSRedirect makes the gateways answer the function's plain HTTP
	// requests with a redirect to the same URL over HTTPS. It is how
	// clients reach the function, not what its replicas run: not part of
	// the revisions (RevisionTemplate), changing it alone makes none.
	HTTPSRedirect bool `json:"httpsRedirect,omitempty"`
}

// FunctionStatus is what the control plane observed of a Function.
type FunctionStatus struct {
	// LatestRevision is the name of the newest Revision.
	LatestRevision string `json:"latestRevision,omitempty"`
	// LatestReadyRevision is the newest Revision that has had a Ready
	// replica. A deploy moves the function's traffic to its revision when
	// that revision becomes this one, so a revision that never starts
	// (a missing image, a crash at start-up) never takes traffic from
	// the one before it.
	LatestReadyRevision string `json:"latestReadyRevision,omitempty"`
	// URL is where the gateway serves the function, when the control
	// plane knows the gateway's address (surge up, or surge server
	// --gateway-url). It is filled in when the function is read, not
	// stored.
	URL string `json:"url,omitempty"`
	// ImageDigest is the digest spec.image resolved to at the latest
	// deploy, which the latest revision runs (RevisionSpec.ImageDigest).
	ImageDigest string `json:"imageDigest,omitempty"`
}

// InitialScale is how many replicas a new revision asks for before the
// autoscaler has seen any traffic: its MinScale, and at least one, so that
// a broken image shows up at deploy time rather than on the first request
// (Knative's initial-scale does the same), and so that a deploy's revision
// can prove it starts before it takes the traffic.
func InitialScale(s *FunctionSpec) int32 { return max(s.Scaling.MinScale, 1) }

// Function is a deployable HTTP function.
type Function struct {
	Kind     string         `json:"kind,omitempty"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     FunctionSpec   `json:"spec"`
	Status   FunctionStatus `json:"status,omitzero"`
}

// GetMetadata implements Object.
func (f *Function) GetMetadata() *ObjectMeta { return &f.Metadata }

// RevisionSpec is an immutable snapshot of a Function's spec.
type RevisionSpec struct {
	// Function is the name of the Function this revision belongs to.
	Function string `json:"function"`
	// Number counts the function's revisions from 1.
	Number int64 `json:"number"`
	// Template is the Function's spec at the time of the deploy.
	Template FunctionSpec `json:"template"`
	// ImageDigest is the digest ("sha256:…") Template.Image resolved to
	// when the revision was made, and every replica of the revision runs
	// it (PinnedImage), so that a tag moved later, a rollback or a new
	// replica runs the same code. Empty when the image could not be
	// resolved at deploy: replicas then pull the reference as written.
	ImageDigest string `json:"imageDigest,omitempty"`
}

// Image is the reference the replicas of the revision run: the template's
// image pinned to ImageDigest when there is one.
func (s *RevisionSpec) Image() string { return PinnedImage(s.Template.Image, s.ImageDigest) }

// RevisionStatus is what the control plane observed of a Revision.
type RevisionStatus struct {
	// ReadyReplicas is how many replicas of the revision are Ready.
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
}

// Revision is one immutable version of a Function, made by each deploy that
// changes the spec.
type Revision struct {
	Kind     string         `json:"kind,omitempty"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     RevisionSpec   `json:"spec"`
	Status   RevisionStatus `json:"status,omitzero"`
}

// GetMetadata implements Object.
func (r *Revision) GetMetadata() *ObjectMeta { return &r.Metadata }

// TrafficTarget sends a share of a function's requests to one revision.
type TrafficTarget struct {
	// Revision is the name of the target revision.
	Revision string `json:"revision"`
	// Percent of requests, 0 to 100; the targets of a Traffic sum to 100.
	Percent int32 `json:"percent"`
	// Tag, when set, makes the revision answer at its own host,
	// TAG-FUNCTION.DOMAIN (TAG-FUNCTION.NAMESPACE.DOMAIN outside the
	// default namespace), whatever its share, as Knative's traffic tags
	// do; a tagged revision with 0% scales on its own requests, and to
	// zero when they stop. A tag names one revision of a function, and a
	// revision has one tag at most (it is named once).
	Tag string `json:"tag,omitempty"`
}

// TrafficSpec lists where a function's requests go.
type TrafficSpec struct {
	Targets []TrafficTarget `json:"targets"`
}

// Traffic says which revisions of a function receive what share of its
// requests. Its name is the function's name.
type Traffic struct {
	Kind     string      `json:"kind,omitempty"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     TrafficSpec `json:"spec"`
}

// GetMetadata implements Object.
func (t *Traffic) GetMetadata() *ObjectMeta { return &t.Metadata }

// ScaleSpec is the desired replica count of one revision.
type ScaleSpec struct {
	// Replicas is how many replicas the revision should have.
	Replicas int32 `json:"replicas"`
}

// ScaleStatus is what the autoscaler and controllers observed.
type ScaleStatus struct {
	// Replicas that exist, in any phase.
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas that can serve.
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Mode of the autoscaler: "stable" or "panic".
	Mode string `json:"mode,omitempty"`
	// Reason for the last decision.
	Reason string `json:"reason,omitempty"`
}

// Scale is the desired size of one revision; its name is the revision's.
type Scale struct {
	Kind     string      `json:"kind,omitempty"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     ScaleSpec   `json:"spec"`
	Status   ScaleStatus `json:"status,omitzero"`
}

// GetMetadata implements Object.
func (s *Scale) GetMetadata() *ObjectMeta { return &s.Metadata }

// Activation is the body of POST /v1/namespaces/NS/scales/NAME/activate:
// a gateway holding requests of a revision that its replicas cannot take
// (it has none, or every one is at its concurrency limit) asks for enough
// replicas for them at once, without waiting for the autoscaler's tick.
type Activation struct {
	// Demand is how many of the revision's requests the gateway holds,
	// waiting or in flight. 0, or no body, counts as 1.
	Demand int32 `json:"demand,omitempty"`
}

// ReplicaPhase is where a replica is in its life.
type ReplicaPhase string

// Replica phases: Pending → Starting → Ready → Terminating, or Failed.
const (
	ReplicaPending     ReplicaPhase = "Pending"
	ReplicaStarting    ReplicaPhase = "Starting"
	ReplicaReady       ReplicaPhase = "Ready"
	ReplicaTerminating ReplicaPhase = "Terminating"
	ReplicaFailed      ReplicaPhase = "Failed"
)

// ReplicaSpec says what a replica runs and where.
type ReplicaSpec struct {
	Function string `json:"function"`
	Revision string `json:"revision"`
	// NodeName is set by the scheduler when it binds the replica.
	NodeName string `json:"nodeName,omitempty"`
}

// ReplicaStatus is reported by the node agent that runs the replica.
type ReplicaStatus struct {
	Phase ReplicaPhase `json:"phase,omitempty"`
	// IP and Port where the replica serves.
	IP   string `json:"ip,omitempty"`
	Port int32  `json:"port,omitempty"`
	// Restarts counts container restarts.
	Restarts int32 `json:"restarts,omitempty"`
	// StartLatency is the time from the agent seeing the binding to Ready,
	// e.g. "84ms".
	StartLatency string `json:"startLatency,omitempty"`
	// StartPhases splits StartLatency: "image 1ms, start 52ms, ready 31ms".
	StartPhases string `json:"startPhases,omitempty"`
	// Message explains a Failed phase.
	Message string `json:"message,omitempty"`
}

// Replica is one container of one revision.
type Replica struct {
	Kind     string        `json:"kind,omitempty"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     ReplicaSpec   `json:"spec"`
	Status   ReplicaStatus `json:"status,omitzero"`
}

// GetMetadata implements Object.
func (r *Replica) GetMetadata() *ObjectMeta { return &r.Metadata }

// NodeState is a node's liveness as gossip sees it.
type NodeState string

// Node states.
const (
	NodeAlive NodeState = "alive"
	NodeDead  NodeState = "dead"
)

// NodeSpec is what the control plane decides about a node.
type NodeSpec struct {
	// PodSubnet is the CIDR the node's replicas take addresses from.
	PodSubnet string `json:"podSubnet,omitempty"`
	// Unschedulable (cordoned) nodes get no new replicas.
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Drain moves the node's replicas elsewhere: the replica controller
	// starts a replacement of each on another node and stops the old one
	// only once replacements are Ready (surge drain). A draining node is
	// unschedulable too.
	Drain bool `json:"drain,omitempty"`
}

// NodeResources is an amount of cpu and memory, as quantity strings.
type NodeResources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// NodeStatus is reported by the node's agent and by gossip.
type NodeStatus struct {
	Address     string        `json:"address,omitempty"`
	Capacity    NodeResources `json:"capacity,omitzero"`
	Allocatable NodeResources `json:"allocatable,omitzero"`
	State       NodeState     `json:"state,omitempty"`
	// AgentURL is the agent's HTTPS endpoint (replica logs), at Address,
	// with the node's serving certificate from the node CA; only the API
	// server calls it (ValidAgentURL).
	AgentURL string `json:"agentURL,omitempty"`
	// MetricsURL is the agent's metrics endpoint, for discovery: see
	// NormalizeMetricsURL. Empty: none that a scraper elsewhere reaches.
	MetricsURL string `json:"metricsURL,omitempty"`
	// LastSeen is when the node last reported.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// Images are the digests ("sha256:…") of the images the agent has
	// pulled, the most recent first, at most MaxNodeImages: the scheduler
	// prefers a node that has a replica's image already, as its start
	// skips the pull.
	Images []string `json:"images,omitempty"`
}

// Node is one machine that runs a node agent.
type Node struct {
	Kind     string     `json:"kind,omitempty"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     NodeSpec   `json:"spec"`
	Status   NodeStatus `json:"status,omitzero"`
}

// GetMetadata implements Object.
func (n *Node) GetMetadata() *ObjectMeta { return &n.Metadata }

// PullSecretSpec holds the credentials of one private registry.
type PullSecretSpec struct {
	// Registry is the registry's host[:port] the credentials are for, as
	// it appears in image references, e.g. "ghcr.io".
	Registry string `json:"registry"`
	// Username and Password are sent with HTTP basic authentication (a
	// registry token goes in Password). Readers other than admins and
	// nodes get Password blanked.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// PullSecret lets nodes pull the images of one private registry, for the
// functions of its namespace (see FunctionSpec.ImagePullSecrets), and the
// control plane resolve their tags to digests at deploy.
type PullSecret struct {
	Kind     string         `json:"kind,omitempty"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     PullSecretSpec `json:"spec"`
}

// GetMetadata implements Object.
func (p *PullSecret) GetMetadata() *ObjectMeta { return &p.Metadata }

// RevisionRate is the load of one revision summed over the gateways that
// report it: GET /v1/stats.
type RevisionRate struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	Revision  string `json:"revision"`
	// Concurrency is the time-averaged number of requests in flight.
	Concurrency float64 `json:"concurrency"`
	// RPS is requests per second over the gateways' last window.
	RPS float64 `json:"rps"`
}

// List is the body of a list answer.
type List[T any] struct {
	// ResourceVersion is the etcd revision the list was read at; a watch
	// from it misses nothing.
	ResourceVersion string `json:"resourceVersion"`
	Items           []T    `json:"items"`
}

// Watch event types.
const (
	EventAdded    = "ADDED"
	EventModified = "MODIFIED"
	EventDeleted  = "DELETED"
	// EventBookmark carries only a resourceVersion, to resume from.
	EventBookmark = "BOOKMARK"
	// EventError carries an *Error in Object; the stream ends after it.
	EventError = "ERROR"
)

// WatchEvent is one line of a watch stream: newline-delimited JSON.
type WatchEvent[T any] struct {
	Type string `json:"type"`
	// Object is the object after the change, or before it for DELETED.
	Object T `json:"object"`
	// ResourceVersion of the change; resume the watch from here.
	ResourceVersion string `json:"resourceVersion"`
	// Error is set on EventError.
	Error *Error `json:"error,omitempty"`
}

// RevisionLoad is one gateway's view of one revision over a window.
type RevisionLoad struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	Revision  string `json:"revision"`
	// Concurrency is the time-averaged number of requests in flight,
	// queued ones included.
	Concurrency float64 `json:"concurrency"`
	// Requests is how many requests arrived in the window.
	Requests int64 `json:"requests"`
	// InFlight and Queued are the counts at the window's end.
	InFlight int64 `json:"inFlight,omitempty"`
	Queued   int64 `json:"queued,omitempty"`
	// Outcomes counts how the revision's requests ended at this gateway,
	// cumulatively (not per window): for the rollout controller, which
	// compares a canary's errors and latency with its baseline's.
	Outcomes *Outcomes `json:"outcomes,omitempty"`
}

// GatewayStats is what a gateway reports every second for the autoscaler:
// POST /v1/stats.
type GatewayStats struct {
	// Gateway names the reporting gateway instance.
	Gateway string `json:"gateway"`
	// Window is the length of the period the numbers cover, e.g. "1s".
	Window Duration `json:"window,omitzero"`
	// At is when the window ended, by the gateway's clock.
	At        time.Time      `json:"at"`
	Revisions []RevisionLoad `json:"revisions"`
	// MetricsURL is the gateway's metrics endpoint, for discovery: see
	// NormalizeMetricsURL. Empty: none that a scraper elsewhere reaches.
	MetricsURL string `json:"metricsURL,omitempty"`
}
