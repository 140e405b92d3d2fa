package gateway

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The client side's share of the work per request is mostly system calls,
// and Go spends one more of them per request than a proxy written for
// epoll: having written an answer, fasthttp reads the connection for the
// next request at once, a read that finds nothing (the client has not had
// the answer yet) before the goroutine parks. clientConn saves that read,
// as countingConn.writeAndWait saves it on the replica's side: the last
// write of a complete answer is held back and made by the next Read,
// which then waits for the next request before it reads (writeWaiter).

// clientListener wraps each accepted connection in a clientConn, counts
// it for its address (see ipConns), which refuses those beyond
// MaxConnsPerIP, and registers it with the gateway's parking (see
// park.go), which closes those beyond MaxConns.
type clientListener struct {
	net.Listener
	park *parking // nil: no parking
	ips  *ipConns // nil: no per-address cap
	// refusal is written on a connection refused per address before it
	// is closed; nil closes it only (a TLS listener's, whose client
	// expects a handshake).
	refusal []byte
}

func (l clientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := newClientConn(c)
		if !l.ips.admit(cc) {
			if l.refusal != nil {
				_, _ = c.Write(l.refusal)
			}
			_ = c.Close()
			continue
		}
		if l.park == nil || l.park.add(cc) {
			return cc, nil
		}
		_ = cc.closeConn() // MaxConns open already
	}
}

// maxHeldWrite bounds what a clientConn holds back (and copies) of an
// answer; longer writes go out at once.
const maxHeldWrite = 4 << 10

// clientConn is a client's connection. One goroutine at a time, the
// fasthttp worker serving it, calls Read and Write, its owner; Close may
// come from any (a drain). A WebSocket tunnel reads it on one goroutine
// and writes it on another: see holdNothing.
type clientConn struct {
	net.Conn
	dl lazyDeadlines
	ww writeWaiter

	// holdNext is set by the handler when the answer is complete: its
	// writes are held back, each until the next, the last until Read.
	holdNext bool
	// tunneled is set, before the hijack, on a connection a tunnel takes
	// over; Read and Write then only read and write.
	tunneled bool
	// closing is set by a tlsConn's Close, which writes TLS's
	// close_notify and may run on any goroutine: Write then writes what
	// is held and what it is given at once, and touches no state of the
	// owner's.
	closing atomic.Bool
	mu      sync.Mutex // guards held, which Close takes from any goroutine
	held    []byte
	buf     []byte // the owner's buffer for held, between uses
	// outer is what fasthttp serves: c itself, or the tlsConn over it,
	// which a woken connection is served as again.
	outer net.Conn

	// Parking (park.go): the registry c is in (nil: none), and its
	// descriptor, -1 for a connection never parked.
	park *parking
	fd   int
	// idleNext is set by the owner when the answer is complete and the
	// request's body read: its next Read waits for the next request.
	idleNext bool
	// idleGen counts such Reads twice, as they begin and as they end: it
	// is odd while one waits. The sweep asks a connection that waits in
	// the same Read as at the last sweep to park (parkAsked), and makes
	// the Read return.
	idleGen   atomic.Uint32
	parkAsked atomic.Bool
	parking   bool // the owner's: Read returned errParked; Close parks
	// Under park.mu: the registry's index, the last sweep's view, and
	// when the connection was parked.
	idx      int
	seenGen  uint32
	parkedAt time.Time

	// ips counts the connection for its address, ipKey, until closeConn
	// (nil: not counted).
	ips   atomic.Pointer[ipConns]
	ipKey netip.Addr
}

func newClientConn(c net.Conn) *clientConn {
	cc := &clientConn{Conn: c, idx: -1, fd: -1}
	cc.outer = cc
	cc.dl.conn = c
	cc.ww.init(c)
	return cc
}

// idleNext tells c, if it is a clientConn, that the request it served is
// complete, body and answer: its next read waits for the next request,
// and it may be parked if that takes a while. The owner calls it.
func idleNext(c net.Conn) {
	if cc := underClientConn(c); cc != nil && cc.fd >= 0 {
		cc.idleNext = true
	}
}

// SetDeadline implements net.Conn; see lazyDeadlines.
func (c *clientConn) SetDeadline(t time.Time) error { return c.dl.SetDeadline(t) }

// SetReadDeadline implements net.Conn; see lazyDeadlines.
func (c *clientConn) SetReadDeadline(t time.Time) error { return c.dl.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn; see lazyDeadlines.
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.dl.SetWriteDeadline(t) }

// holdAnswer asks c to hold back the writes of the answer being written,
// which is complete (no streamed body follows): fasthttp reads the next
// request right after it. Over TLS the clientConn under it holds the
// answer's record. The connection may have no clientConn (the handler
// served by a server of a test's): then nothing changes.
func holdAnswer(c net.Conn) {
	if cc := underClientConn(c); cc != nil {
		cc.holdNext = true
	}
}

// holdNothing readies c's clientConn, if it has one, for a tunnel: its
// owner calls it before the hijack, and from then on Read and Write may
// run at once and hold nothing back.
//
// A tunnel's connection leaves the parking's registry: it is never
// parked, and open WebSockets are counted apart from MaxConns.
func holdNothing(c net.Conn) {
	if cc := underClientConn(c); cc != nil {
		cc.tunneled = true
		if cc.park != nil {
			cc.park.forget(cc)
			cc.park, cc.fd = nil, -1
		}
	}
}

func (c *clientConn) Write(p []byte) (int, error) {
	if c.tunneled {
		return c.dl.write(p)
	}
	if c.closing.Load() {
		if held := c.takeHeld(); len(held) > 0 {
			if _, err := c.dl.write(held); err != nil {
				return 0, err
			}
		}
		return c.dl.write(p)
	}
	if err := c.flushHeld(); err != nil {
		return 0, err
	}
	if c.holdNext && c.ww.ok() && len(p) <= maxHeldWrite {
		b := append(c.buf[:0], p...)
		c.buf = nil
		c.mu.Lock()
		c.held = b
		c.mu.Unlock()
		return len(p), nil
	}
	c.holdNext = false
	return c.dl.write(p)
}

// takeHeld returns what is held back, and holds nothing any more.
func (c *clientConn) takeHeld() []byte {
	c.mu.Lock()
	p := c.held
	c.held = nil
	c.mu.Unlock()
	return p
}

func (c *clientConn) flushHeld() error {
	p := c.takeHeld()
	if len(p) == 0 {
		return nil
	}
	_, err := c.dl.write(p)
	c.buf = p[:0]
	return err
}

// Read writes what is held back, then waits for the client's next bytes
// and reads them. Waiting for the next request, it returns errParked when
// the sweep asks it to: see park.go.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.tunneled {
		return c.dl.read(p)
	}
	c.holdNext = false
	if c.idleNext {
		c.idleNext = false
		if c.parkAsked.Load() { // a sweep's ask that came too late
			c.parkAsked.Store(false)
		}
		c.idleGen.Add(1)
		n, err := c.read(p, true)
		c.idleGen.Add(1)
		return n, err
	}
	return c.read(p, false)
}

// read is Read's; idle: the read waits for the next request.
func (c *clientConn) read(p []byte, idle bool) (int, error) {
	held := c.takeHeld()
	if len(held) == 0 {
		return c.readIdle(p, idle)
	}
	n, err, rerr := c.ww.writeThenWait(held)
	switch {
	case err != nil:
		return 0, err
	case n < len(held):
		if _, err := c.dl.write(held[n:]); err != nil {
			return 0, err
		}
	case rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded):
		c.buf = held[:0]
		return 0, rerr
	}
	// Written, and the client's next bytes have come, or a deadline
	// passed, early or not: the read says which.
	c.buf = held[:0]
	return c.readIdle(p, idle)
}

// readIdle reads under the deadline asked for (see lazyDeadlines.read),
// and, waiting for the next request (idle), returns errParked instead
// when the sweep interrupted it to park the connection.
func (c *clientConn) readIdle(p []byte, idle bool) (int, error) {
	if !idle {
		return c.dl.read(p)
	}
	for {
		n, err := c.Conn.Read(p)
		if n > 0 || err == nil {
			return n, err
		}
		if c.parkAsked.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
			c.parking = true
			return 0, errParked
		}
		if !c.dl.early(dirRead, err) {
			return n, err
		}
	}
}

// Close writes what is held back first: the last answer before a
// Connection: close. A connection being parked is handed to the parking
// instead, as long as it takes it.
func (c *clientConn) Close() error {
	if p := c.takeHeld(); len(p) > 0 {
		_, _ = c.dl.write(p)
	}
	if c.parking {
		c.parking = false
		if c.park.park(c) {
			return nil
		}
	}
	if c.park != nil {
		c.park.forget(c)
	}
	return c.closeConn()
}

// closeConn closes the connection itself, fasthttp's or the parking's
// last word on it, and uncounts it for its address.
func (c *clientConn) closeConn() error {
	if l := c.ips.Swap(nil); l != nil {
		l.release(c.ipKey)
	}
	return c.Conn.Close()
}
