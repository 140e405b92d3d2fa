package auth

import (
	"net/netip"

	"github.com/surgeplatform/surge/api"
)

// Verb is what a request does to a resource.
type Verb int

// Verbs. Read covers get, list and watch; Write covers create, replace and
// delete.
const (
	Read Verb = iota
	Write
)

// Resources that are not API object kinds.
const (
	ResourceTokens  = "tokens"
	ResourceMetrics = "metrics"
	// ResourceActivations is a gateway asking for a revision's first
	// replica (scale from zero).
	ResourceActivations = "activations"
	// ResourceStats is gateways reporting per-revision load.
	ResourceStats = "stats"
	// ResourceRegistry is the OCI registry at /v2/: every role pulls,
	// only admins push.
	ResourceRegistry = "registry"
	// ResourceVersion and ResourceWhoami are the server's version and
	// the caller's own identity.
	ResourceVersion = "version"
	ResourceWhoami  = "whoami"
	// ResourceLogs is replicas' logs, which the API server fetches from
	// the node agents: readers (admin and viewer) only.
	ResourceLogs = "logs"
	// ResourceBootstrap is a node trading the join token for its
	// certificate: the only thing the join token may do.
	ResourceBootstrap = "bootstrap"
	// ResourceCertificates is a node renewing its client certificate or
	// getting its serving certificate.
	ResourceCertificates = "certificates"
	// ResourceGossipKey is the cluster's gossip key: for the members of
	// gossip (nodes, by their certificate, and gateways), read only.
	ResourceGossipKey = "gossipkey"
	// ResourceDiscovery is the list of every role's metrics endpoint,
	// for Prometheus' service discovery.
	ResourceDiscovery = "discovery"
)

// Principal is who a request authenticated as: a bearer token, or a node
// by its client certificate.
type Principal struct {
	// Role is what the principal may do.
	Role Role `json:"role"`
	// ID is the token's ID; empty for a node certificate.
	ID string `json:"id,omitempty"`
	// Node is the node a client certificate names; empty for a token. A
	// node-role token without a node (the join token) only bootstraps.
	Node string `json:"node,omitempty"`
	// Address is the node's registered address, from its certificate:
	// the server checked it when it first certified the node.
	Address netip.Addr `json:"address,omitzero"`
	// TokenRevision is the token's Revision, for Store.WaitRevoked.
	TokenRevision int64 `json:"-"`
}

// TokenPrincipal is the principal of a bearer token.
func TokenPrincipal(t Token) Principal {
	return Principal{Role: t.Role, ID: t.ID, TokenRevision: t.Revision}
}

// NodePrincipal is the principal of node's client certificate.
func NodePrincipal(node string, addr netip.Addr) Principal {
	return Principal{Role: RoleNode, Node: node, Address: addr}
}

// Name says who the principal is, for messages: "token ID (role R)" or
// "node NAME".
func (p Principal) Name() string {
	if p.Node != "" {
		return "node " + p.Node
	}
	return "token " + p.ID + " (role " + string(p.Role) + ")"
}

// readable lists, per role other than admin, the resources it may read; a
// nil entry is every resource but the tokens and the logs.
var readable = map[Role]map[string]bool{
	RoleViewer:  nil,
	RoleGateway: nil,
	// A node reads what it needs: nodes and replicas (its own, and all of
	// them for the replica network policy), the revisions of its
	// replicas and the pull secrets of their namespaces (the API checks
	// which), and the images it pulls.
	RoleNode: {api.NodeKind.Plural: true, api.ReplicaKind.Plural: true, api.RevisionKind.Plural: true,
		api.PullSecretKind.Plural: true, ResourceRegistry: true, ResourceVersion: true, ResourceWhoami: true},
	// A scraper reads metrics and where they are, and nothing of the
	// cluster's objects.
	RoleMetrics: {ResourceMetrics: true, ResourceDiscovery: true, ResourceVersion: true, ResourceWhoami: true},
}

// writable lists, per role other than admin, the resources it may write.
var writable = map[Role]map[string]bool{
	RoleViewer: {},
	// A node writes its own Node, lease and certificates and its
	// replicas' status; the API server checks which (NodeRestriction).
	RoleNode:    {api.ReplicaKind.Plural: true, api.NodeKind.Plural: true, ResourceCertificates: true},
	RoleGateway: {ResourceActivations: true, ResourceStats: true},
	RoleMetrics: {},
}

// Allowed reports whether p may do verb on resource (a kind's plural, or
// one of the Resource constants). Tokens are the admin's alone, for
// reading too: a token list is a map of who can do what. Logs are for
// those who read everything (admin and viewer); the gossip key for those
// who gossip (nodes and gateways). The join token (a
// node-role token, held by every node and gateway host) may only
// bootstrap a node's certificate; a node then acts with that certificate,
// and the API server narrows further what it may change to its own
// objects.
func Allowed(p Principal, v Verb, resource string) bool {
	r := p.Role
	switch {
	case r == RoleAdmin:
		return true
	case !r.Valid() || resource == ResourceTokens:
		return false
	case r == RoleNode && p.Node == "":
		return v == Write && resource == ResourceBootstrap
	case resource == ResourceBootstrap:
		return false
	case resource == ResourceGossipKey:
		return v == Read && (r == RoleNode || r == RoleGateway)
	case resource == ResourceLogs:
		return v == Read && r == RoleViewer
	case v == Read:
		rs := readable[r]
		return rs == nil || rs[resource]
	}
	return writable[r][resource]
}
