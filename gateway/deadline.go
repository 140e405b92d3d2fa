package gateway

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// lazyDeadlines gives a connection deadlines that cost nothing in the
// common case. fasthttp moves a client connection's deadlines three times
// a request (idle, then read, then write), and the gateway a replica
// connection's once; each move reads the clock twice more and re-arms a
// runtime timer, several per cent of a small request's work. Deadlines
// only ever matter when one passes, so a deadline moved later is only
// noted: the armed one fires early, and then (rarely: once per timeout
// period on a busy connection) the read or write that failed is retried
// against the deadline asked for. A deadline moved earlier is armed at
// once. A read or write therefore fails on a deadline exactly when it
// would have without this.
//
// No clock is read here: whether the deadline asked for has passed is
// left to the connection. Re-armed in the past, it fails the retried call
// at once, and that second failure, on the deadline asked for, ends the
// retries.
type lazyDeadlines struct {
	conn net.Conn
	mu   sync.Mutex // Set*Deadline may come from any goroutine (a drain)
	// asked and armed, per direction (0 read, 1 write); the zero Time
	// is no deadline. armed is never later than asked.
	asked, armed [2]time.Time
}

const (
	dirRead = iota
	dirWrite
)

// later reports whether a is later than b, the zero Time being latest.
func later(a, b time.Time) bool {
	switch {
	case a.IsZero():
		return !b.IsZero()
	case b.IsZero():
		return false
	}
	return a.After(b)
}

func (d *lazyDeadlines) set(dir int, t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked[dir] = t
	if !later(d.armed[dir], t) {
		return nil // fires no later than asked: retried if early
	}
	d.armed[dir] = t
	if dir == dirRead {
		return d.conn.SetReadDeadline(t)
	}
	return d.conn.SetWriteDeadline(t)
}

// SetDeadline implements net.Conn.
func (d *lazyDeadlines) SetDeadline(t time.Time) error {
	if err := d.set(dirRead, t); err != nil {
		return err
	}
	return d.set(dirWrite, t)
}

// SetReadDeadline implements net.Conn.
func (d *lazyDeadlines) SetReadDeadline(t time.Time) error { return d.set(dirRead, t) }

// SetWriteDeadline implements net.Conn.
func (d *lazyDeadlines) SetWriteDeadline(t time.Time) error { return d.set(dirWrite, t) }

// interruptRead makes a read waiting under d return at once with a
// deadline error, as a deadline armed in the past: the parking sweep's
// way to end a connection's wait (see park.go). The deadline asked for
// is kept; the next read after the interrupted one re-arms it (early).
func (d *lazyDeadlines) interruptRead() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armed[dirRead] = time.Unix(1, 0)
	_ = d.conn.SetReadDeadline(d.armed[dirRead])
}

// early reports whether err is an armed deadline that differs from the
// one asked for (it fired early), and if so arms the one asked for: the
// caller retries.
func (d *lazyDeadlines) early(dir int, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	asked := d.asked[dir]
	if d.armed[dir] == asked {
		return false // fired on the deadline asked for: do not spin
	}
	d.armed[dir] = asked
	if dir == dirRead {
		return d.conn.SetReadDeadline(asked) == nil
	}
	return d.conn.SetWriteDeadline(asked) == nil
}

// read reads from the connection under the deadline asked for.
func (d *lazyDeadlines) read(p []byte) (int, error) {
	for {
		n, err := d.conn.Read(p)
		if n > 0 || err == nil || !d.early(dirRead, err) {
			return n, err
		}
	}
}

// write writes to the connection under the deadline asked for.
func (d *lazyDeadlines) write(p []byte) (int, error) {
	var done int
	for {
		n, err := d.conn.Write(p[done:])
		done += n
		if err == nil || !d.early(dirWrite, err) {
			return done, err
		}
	}
}
