package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/surgeplatform/surge/api"
)

// FunctionInfo is what routing needs of a Function.
type FunctionInfo struct {
	Namespace, Name string
	// DefaultRevision takes all traffic when the function has no Traffic
	// (yet): its latest ready revision, or its latest while none has been
	// ready, never one still rolling out after another was ready.
	DefaultRevision string
	// HTTPSRedirect answers the function's plain HTTP requests with a
	// redirect to HTTPS (spec.httpsRedirect).
	HTTPSRedirect bool
}

// RevisionInfo is what routing needs of a Revision.
type RevisionInfo struct {
	Namespace, Name string
	Function        string
	// Number orders revisions; the highest is the latest when the function
	// names none.
	Number int64
	// Concurrency is the per-replica limit; 0 means none.
	Concurrency int32
	// Timeout is the total limit of one request; 0 means the gateway's
	// DefaultTimeout.
	Timeout time.Duration
	// ResponseStartTimeout bounds the wait for the response header after
	// the request was sent; 0 means the gateway's ResponseStartTimeout.
	ResponseStartTimeout time.Duration
	// IdleTimeout bounds the silence within a response body or a
	// WebSocket; 0 means the gateway's IdleStreamTimeout.
	IdleTimeout time.Duration
	// QueueDepth is how many of the revision's requests may wait in the
	// gateway for a replica; 0 means the gateway's Config.QueueDepth.
	QueueDepth int
}

// EndpointInfo is one replica as routing sees it, from the control plane's
// Replica objects or from gossip.
type EndpointInfo struct {
	// Namespace and Replica name the replica; they key the endpoint.
	Namespace, Replica string
	Function, Revision string
	// Node runs the replica; DeleteNode drops all of a node's endpoints.
	Node string
	// Addr is ip:port.
	Addr string
	// Phase: only Ready endpoints get new requests; Terminating ones finish
	// theirs, and idempotent requests that fail on them are retried.
	Phase api.ReplicaPhase
	// FromGossip marks an endpoint that gossip announced and the control
	// plane has not (yet) confirmed: a control-plane relist does not
	// clear it (ClearEndpoints), as gossip's own events add and remove it.
	// It is routed only where it agrees with the control plane (see
	// State.gossipAgrees).
	FromGossip bool
}

// State is the gateway's model of the world, edited by route sources
// through Routes.Update. Its methods are plain map edits; the routing table
// is rebuilt from it once per Update.
type State struct {
	functions map[api.Key]FunctionInfo
	revisions map[api.Key]RevisionInfo
	traffic   map[api.Key][]api.TrafficTarget // by function
	endpoints map[api.Key]EndpointInfo        // by replica
	// bound is every replica the control plane lists, in any phase: the
	// node it is bound to, what it serves and its address once known.
	// subnets is every node's pod subnet, as the control plane assigned
	// it. Any member of gossip can announce anything; what it announces
	// is routed only where these agree.
	bound   map[api.Key]EndpointInfo
	subnets map[string]netip.Prefix
	// reported holds the replicas set since the last rebuild: a dead
	// replica's ejection ends when it is reported Ready again.
	reported map[api.Key]bool
}

func newState() State {
	return State{
		functions: map[api.Key]FunctionInfo{},
		revisions: map[api.Key]RevisionInfo{},
		traffic:   map[api.Key][]api.TrafficTarget{},
		endpoints: map[api.Key]EndpointInfo{},
		bound:     map[api.Key]EndpointInfo{},
		subnets:   map[string]netip.Prefix{},
		reported:  map[api.Key]bool{},
	}
}

// SetFunction adds or replaces a function.
func (s *State) SetFunction(f FunctionInfo) {
	s.functions[api.Key{Namespace: f.Namespace, Name: f.Name}] = f
}

// DeleteFunction removes a function; its revisions stop being routed.
func (s *State) DeleteFunction(ns, name string) {
	delete(s.functions, api.Key{Namespace: ns, Name: name})
}

// SetRevision adds or replaces a revision.
func (s *State) SetRevision(r RevisionInfo) {
	s.revisions[api.Key{Namespace: r.Namespace, Name: r.Name}] = r
}

// DeleteRevision removes a revision.
func (s *State) DeleteRevision(ns, name string) {
	delete(s.revisions, api.Key{Namespace: ns, Name: name})
}

// SetTraffic replaces a function's traffic split. The slice is copied.
func (s *State) SetTraffic(ns, function string, targets []api.TrafficTarget) {
	s.traffic[api.Key{Namespace: ns, Name: function}] = append([]api.TrafficTarget(nil), targets...)
}

// DeleteTraffic removes a function's split; its DefaultRevision then takes all.
func (s *State) DeleteTraffic(ns, function string) {
	delete(s.traffic, api.Key{Namespace: ns, Name: function})
}

// SetEndpoint adds or replaces a replica's endpoint, as the control plane
// lists it. A replica the control plane still reports starting keeps the
// ready endpoint gossip announced for it (gossip is faster).
func (s *State) SetEndpoint(e EndpointInfo) {
	k := api.Key{Namespace: e.Namespace, Name: e.Replica}
	s.bound[k] = e
	if cur, ok := s.endpoints[k]; ok && cur.FromGossip && (e.Phase == api.ReplicaPending || e.Phase == api.ReplicaStarting) {
		return
	}
	s.endpoints[k] = e
	s.reported[k] = true
}

// SetGossipEndpoint adds or replaces a replica's endpoint as gossip
// announced it (e.FromGossip), unless the control plane already lists it
// ready or terminating: then the control plane's word stands. It is
// routed once, and while, the control plane agrees (gossipAgrees).
func (s *State) SetGossipEndpoint(e EndpointInfo) {
	e.FromGossip = true
	k := api.Key{Namespace: e.Namespace, Name: e.Replica}
	if cur, ok := s.endpoints[k]; ok && !cur.FromGossip && (cur.Phase == api.ReplicaReady || cur.Phase == api.ReplicaTerminating) {
		return
	}
	s.endpoints[k] = e
	s.reported[k] = true
}

// DeleteEndpoint removes a replica's endpoint: the control plane deleted
// the replica.
func (s *State) DeleteEndpoint(ns, replica string) {
	k := api.Key{Namespace: ns, Name: replica}
	delete(s.endpoints, k)
	delete(s.bound, k)
}

// DeleteGossipEndpoint removes a replica's endpoint that gossip says is
// gone, when gossip names the node the control plane bound it to.
func (s *State) DeleteGossipEndpoint(ns, replica, node string) {
	k := api.Key{Namespace: ns, Name: replica}
	if b, ok := s.bound[k]; ok && b.Node != node {
		return
	}
	delete(s.endpoints, k)
}

// SetNodeSubnet records the pod subnet the control plane assigned a node.
func (s *State) SetNodeSubnet(node string, subnet netip.Prefix) {
	if subnet.IsValid() {
		s.subnets[node] = subnet
	} else {
		delete(s.subnets, node)
	}
}

// ForgetNode drops a node the control plane deleted.
func (s *State) ForgetNode(node string) { delete(s.subnets, node) }

// ClearNodeSubnets drops every node's subnet; see ClearFunctions.
func (s *State) ClearNodeSubnets() { clear(s.subnets) }

// gossipAgrees reports whether an endpoint gossip announced agrees with
// the control plane, and returns it as routed: the replica exists, bound
// to the node gossip names; its address lies in that node's pod subnet,
// and is the one the control plane knows, when it knows one; and it
// serves the function and revision the control plane says (not those
// gossip says).
func (s *State) gossipAgrees(e EndpointInfo) (EndpointInfo, bool) {
	b, ok := s.bound[api.Key{Namespace: e.Namespace, Name: e.Replica}]
	if !ok || b.Node != e.Node {
		return e, false
	}
	subnet, ok := s.subnets[b.Node]
	ap, err := netip.ParseAddrPort(e.Addr)
	if !ok || err != nil || !subnet.Contains(ap.Addr().Unmap()) {
		return e, false
	}
	if b.Addr != "" && b.Addr != e.Addr {
		return e, false
	}
	e.Function, e.Revision = b.Function, b.Revision
	return e, true
}

// DeleteNode removes every endpoint on a node (gossip declared it dead).
func (s *State) DeleteNode(node string) {
	for k, e := range s.endpoints {
		if e.Node == node {
			delete(s.endpoints, k)
		}
	}
}

// ClearFunctions, ClearRevisions, ClearTraffic and ClearEndpoints drop
// every object of one kind, for a source that lists again after its watch
// history was compacted; it then sets what the new list holds, in the same
// Update, so routing never sees the gap.
func (s *State) ClearFunctions() { clear(s.functions) }

// ClearRevisions drops every revision; see ClearFunctions.
func (s *State) ClearRevisions() { clear(s.revisions) }

// ClearTraffic drops every traffic split; see ClearFunctions.
func (s *State) ClearTraffic() { clear(s.traffic) }

// ClearEndpoints drops every endpoint the control plane gave, keeping
// those gossip announced (routed again once the new list agrees); see
// ClearFunctions.
func (s *State) ClearEndpoints() {
	clear(s.bound)
	for k, e := range s.endpoints {
		if !e.FromGossip {
			delete(s.endpoints, k)
		}
	}
}

// Updater applies a change to the routing state. Routes implements it.
type Updater interface {
	// Update runs fn on the state under a lock and then publishes a new
	// routing snapshot. It may block briefly (the rebuild is O(routes));
	// call it from a source's own goroutine, never from within fn.
	Update(fn func(*State))
}

// RouteSource feeds route changes into an Updater until ctx ends. The
// control-plane watch (ControlPlaneSource) is one, gossip (GossipSource)
// another.
// Run returns ctx.Err() when ctx ends, or an error that retrying will not
// fix.
type RouteSource interface {
	Run(ctx context.Context, u Updater) error
}

// Activator asks for replicas for the requests a revision's replicas
// cannot take — a revision at zero, or one whose replicas are all at their
// limit — without waiting for the autoscaler's next tick. The
// control-plane wiring implements it: the API raises the revision's Scale
// to what demand needs, and tells the autoscaler.
type Activator interface {
	// Activate asks for replicas for demand requests of the revision: every
	// request of it this gateway holds, waiting or in flight. It is called
	// from a request's goroutine, per revision at most once per
	// Config.ActivationInterval, or sooner when demand has doubled since the
	// last call. It must not block: hand the work to a goroutine of your
	// own.
	Activate(namespace, function, revision string, demand int)
}
