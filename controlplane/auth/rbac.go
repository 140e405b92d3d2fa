package auth

import "github.com/surgeplatform/surge/api"

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
)

// writable lists, per role other than admin, the resources it may write.
var writable = map[Role]map[string]bool{
	RoleViewer:  {},
	RoleNode:    {api.ReplicaKind.Plural: true, api.NodeKind.Plural: true},
	RoleGateway: {ResourceActivations: true, ResourceStats: true},
}

// Allowed reports whether a role may do verb on resource (a kind's plural,
// or one of the Resource constants). Tokens are the admin's alone, for
// reading too: a token list is a map of who can do what.
func Allowed(r Role, v Verb, resource string) bool {
	if r == RoleAdmin {
		return true
	}
	if resource == ResourceTokens {
		return false
	}
	if v == Read {
		return r.Valid()
	}
	return writable[r][resource]
}
