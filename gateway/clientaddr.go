package gateway

import "net/netip"

// What the gateway believes of a client's address: whether it is a
// trusted proxy's (Config.TrustedProxies), whose forwarding headers are
// kept.

// trustedNets is Config.TrustedProxies. Empty, it trusts no one, at the
// cost of a length check per request.
type trustedNets []netip.Prefix

// contains reports whether a is in one of the networks.
func (t trustedNets) contains(a netip.Addr) bool {
	if len(t) == 0 || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
