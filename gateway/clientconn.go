package gateway

import (
	"errors"
	"net"
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

// clientListener wraps each accepted connection in a clientConn.
type clientListener struct {
	net.Listener
}

func (l clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newClientConn(c), nil
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
}

func newClientConn(c net.Conn) net.Conn {
	cc := &clientConn{Conn: c}
	cc.dl.conn = c
	cc.ww.init(c)
	return cc
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
// answer's record. The connection may have no clientConn (a listener
// from Deps, fasthttp's per-IP wrapper): then nothing changes.
func holdAnswer(c net.Conn) {
	if cc := underClientConn(c); cc != nil {
		cc.holdNext = true
	}
}

// holdNothing readies c's clientConn, if it has one, for a tunnel: its
// owner calls it before the hijack, and from then on Read and Write may
// run at once and hold nothing back.
func holdNothing(c net.Conn) {
	if cc := underClientConn(c); cc != nil {
		cc.tunneled = true
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
// and reads them.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.tunneled {
		return c.dl.read(p)
	}
	c.holdNext = false
	held := c.takeHeld()
	if len(held) == 0 {
		return c.dl.read(p)
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
	return c.dl.read(p)
}

// Close writes what is held back first: the last answer before a
// Connection: close.
func (c *clientConn) Close() error {
	if p := c.takeHeld(); len(p) > 0 {
		_, _ = c.dl.write(p)
	}
	return c.Conn.Close()
}
