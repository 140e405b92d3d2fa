package gateway

import (
	"net"
	"os"
	"syscall"
)

// writeWaiter saves a connection's owner the read system call that finds
// nothing. Go's reads try the system call first and wait for the poller
// only when it fails; right after a request goes to a replica, or an
// answer to a client, that read always fails (nginx waits for readiness
// instead). Waiting before the first read is only safe when the poller's
// readiness was reset before the write, or bytes that came in between
// would be missed: so writeThenWait writes inside RawConn.Read, which
// resets it first. countingConn and clientConn use it for the last write
// of a request and of an answer.
type writeWaiter struct {
	raw syscall.RawConn // nil when the connection has no descriptor
	fn  func(fd uintptr) bool

	// State of one writeThenWait, for its callback.
	pending []byte
	n       int
	err     error
}

// init readies w for c. A connection without a descriptor leaves it off:
// see ok.
func (w *writeWaiter) init(c net.Conn) {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.fn = w.writeThenPoll // bound once: a method value per call would allocate
		}
	}
}

// ok reports whether the connection has a descriptor to write and wait on.
func (w *writeWaiter) ok() bool { return w.raw != nil }

// writeThenWait writes p in one system call and waits until the
// connection is readable (or a read deadline passes). It returns how much
// of p went out (the caller writes the rest the ordinary way, and then
// reads as usual), the write's error, and the wait's.
func (w *writeWaiter) writeThenWait(p []byte) (n int, werr, rerr error) {
	w.pending, w.n, w.err = p, 0, nil
	rerr = w.raw.Read(w.fn)
	n, werr = w.n, w.err
	w.pending = nil
	return n, werr, rerr
}

// writeThenPoll is writeThenWait's RawConn.Read callback: the first call
// writes and asks to wait for readability; the next one, called when the
// connection is readable, ends the wait.
func (w *writeWaiter) writeThenPoll(fd uintptr) bool {
	if w.pending == nil {
		return true
	}
	p := w.pending
	w.pending = nil
	n, err := rawWrite(fd, p)
	w.n = n
	if err != nil {
		w.err = err
		return true
	}
	return n < len(p)
}

// rawWrite writes p to the non-blocking descriptor fd once. A socket that
// takes nothing now (EAGAIN) is no error: the caller writes the rest the
// ordinary way.
func rawWrite(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		}
		return n, nil
	}
}
