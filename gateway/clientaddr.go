package gateway

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// What the gateway believes of a client's address: whether it is a
// trusted proxy's (Config.TrustedProxies), whose forwarding headers are
// kept and whose connections are not capped, and how many connections
// it holds (Config.MaxConnsPerIP).

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

// connAddr is a connection's client address, the zero Addr for one that
// has none (not TCP).
func connAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// ipv6Bits is how much of an IPv6 address names one client for the
// per-address cap: a /64, the least a subscriber is usually given (RFC
// 6177), so a host does not get 2^64 caps by changing its address.
const ipv6Bits = 64

// capKey is the key a client address is counted under.
func capKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(ipv6Bits)
		return p.Addr()
	}
	return a
}

// ipConns counts the open client connections of each client address,
// parked ones and WebSockets among them, from accept to close, and
// refuses one past Config.MaxConnsPerIP: one host cannot take the room
// of MaxConns from everyone else. fasthttp's own MaxConnsPerIP is not
// used: it counts a connection only while fasthttp serves it, so it
// would forget a parked connection, refuse one that wakes, and hide the
// connection from the parking (see park.go).
//
// Each accept and each close takes the lock once; requests never do.
type ipConns struct {
	max     int // 0: no cap
	trusted trustedNets

	mu sync.Mutex
	n  map[netip.Addr]int
}

func newIPConns(max int, trusted trustedNets) *ipConns {
	return &ipConns{max: max, trusted: trusted, n: map[netip.Addr]int{}}
}

// admit counts c's connection, or reports false when its address holds
// MaxConnsPerIP connections already. A connection from a trusted proxy,
// or without an address, is admitted and not counted.
func (l *ipConns) admit(c *clientConn) bool {
	if l == nil || l.max <= 0 {
		return true
	}
	a := connAddr(c.Conn)
	if !a.IsValid() || l.trusted.contains(a) {
		return true
	}
	k := capKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[k] >= l.max {
		return false
	}
	l.n[k]++
	c.ipKey = k
	c.ips.Store(l)
	return true
}

// release uncounts a connection admit counted.
func (l *ipConns) release(k netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.n[k] - 1; n > 0 {
		l.n[k] = n
	} else {
		delete(l.n, k)
	}
}

// count is how many connections a's key holds, for tests.
func (l *ipConns) count(a netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[capKey(a)]
}

// msgTooManyConns answers a connection past MaxConnsPerIP.
const msgTooManyConns = "too many connections from this address"

// tooManyConnsAnswer is written on a connection refused past
// MaxConnsPerIP, on the plain HTTP listener, before it is closed: a
// fresh socket takes it whole without blocking the accept loop.
var tooManyConnsAnswer = func() []byte {
	body := `{"error":"` + msgTooManyConns + "\"}\n"
	return []byte("HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: " + contentTypeJSON +
		"\r\nRetry-After: " + retryAfterSeconds + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()
