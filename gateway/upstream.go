package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The gateway uses fasthttp.HostClient per replica for what it does well,
// the connection pool (AcquireConn/ReleaseConn/CloseConn) and its buffer
// pools, but drives each exchange itself instead of calling Do, because a
// proxy needs what Do hides: whether a byte of the request went out (the
// retry rule), a response-start deadline distinct from the body's idle and
// total deadlines, and a streamed response body whose release allocates
// nothing (Do's StreamResponseBody allocates closures per request).

// newHostClient returns the connection pool of one replica. Retries are
// the gateway's decision, so fasthttp's own retry of idempotent requests
// is turned off, though Do is not called.
func newHostClient(addr string, limit int64, cfg *Config) *fasthttp.HostClient {
	maxConns := cfg.MaxConnsPerEndpoint
	if limit > 0 && int(limit) < maxConns {
		maxConns = int(limit)
	}
	dialTimeout := cfg.DialTimeout
	return &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", addr, dialTimeout)
			if err != nil {
				return nil, &dialError{addr: addr, err: err}
			}
			return newCountingConn(c), nil
		},
		MaxConns:                  maxConns,
		MaxIdleConnDuration:       cfg.UpstreamIdleConnTimeout,
		ReadBufferSize:            cfg.UpstreamBufferBytes,
		WriteBufferSize:           cfg.UpstreamBufferBytes,
		MaxIdemponentCallAttempts: 1,
		RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		RetryIf:                   func(*fasthttp.Request) bool { return false },
		DisablePathNormalizing:    true,
		NoDefaultUserAgentHeader:  true,
		ConnPoolStrategy:          fasthttp.LIFO, // warm connections first; idle ones age out
	}
}

// dialError marks a failure to connect: nothing was sent.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("connect to replica %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// failure is failRefused when the replica's address refused the
// connection or cannot be reached — nothing listens there, the process is
// gone — and failConnect for any other failure (a timeout: the replica
// may only be slow to accept).
func (e *dialError) failure() failure {
	if errors.Is(e.err, syscall.ECONNREFUSED) || errors.Is(e.err, syscall.EHOSTUNREACH) || errors.Is(e.err, syscall.ENETUNREACH) {
		return failRefused
	}
	return failConnect
}

// countingConn counts the bytes that crossed a replica connection, so a
// failed attempt can tell whether any of the request went out or any of
// the answer came back. One goroutine uses a pooled connection at a time.
//
// It also saves the request path a system call: see writeAndWait.
type countingConn struct {
	net.Conn
	dl            lazyDeadlines
	ww            writeWaiter
	written, read int64
	waitNext      bool // the next Write is the request's last: see writeAndWait
}

func newCountingConn(c net.Conn) *countingConn {
	cc := &countingConn{Conn: c}
	cc.dl.conn = c
	cc.ww.init(c)
	return cc
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.waitNext && c.ww.ok() {
		c.waitNext = false
		return c.writeAndWait(p)
	}
	n, err := c.dl.write(p)
	c.written += int64(n)
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.dl.read(p)
	c.read += int64(n)
	return n, err
}

// SetDeadline implements net.Conn; see lazyDeadlines.
func (c *countingConn) SetDeadline(t time.Time) error { return c.dl.SetDeadline(t) }

// SetReadDeadline implements net.Conn; see lazyDeadlines.
func (c *countingConn) SetReadDeadline(t time.Time) error { return c.dl.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn; see lazyDeadlines.
func (c *countingConn) SetWriteDeadline(t time.Time) error { return c.dl.SetWriteDeadline(t) }

// writeAndWait writes p, the last of a request, and returns once the
// answer has begun to arrive (or the read deadline passed), without the
// read that would find nothing yet (see writeWaiter). A write the socket
// does not take whole at once (a full send buffer) is finished the
// ordinary way, and the answer read as usual.
func (c *countingConn) writeAndWait(p []byte) (int, error) {
	n, err, rerr := c.ww.writeThenWait(p)
	c.written += int64(n)
	switch {
	case err != nil:
		return n, err
	case n < len(p):
		m, err := c.dl.write(p[n:])
		c.written += int64(m)
		return n + m, err
	case rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded):
		// The request went out; the wait for the answer failed (a
		// closed connection).
		return n, rerr
	}
	// The request went out, and the answer has begun to come or a
	// deadline passed (perhaps early, see lazyDeadlines): the read says.
	return n, nil
}

// connCall calls a HostClient method that takes fasthttp's unexported
// connection type, given the connection as any. Generics name the type
// for us, so the pooled connection can live in the exchange with no
// allocation and no unsafe.
func connCall[C any](hc *fasthttp.HostClient, m func(*fasthttp.HostClient, C), cc any) {
	m(hc, cc.(C))
}

var errBodyTooLarge = errors.New("gateway: request body too large")

// bodyReader streams the client's request body to the replica, counting
// what it consumed (a body partly consumed cannot be replayed) and
// enforcing the body limit on bodies of unknown length.
type bodyReader struct {
	r     io.Reader
	n     int64
	limit int64
	done  bool
	err   error // the client side's error, as opposed to the replica's
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err // sticky: fasthttp's chunk writer ignores an error that comes with data
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.done = true
	}
	if b.n > b.limit {
		b.err = errBodyTooLarge
		return n, b.err
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// roundTrip sends x.req to ep and reads the response header into x.resp.
// On success the connection stays checked out in x (x.cc or x.dialed,
// x.br) until finishUpstream. On failure it is closed and the failure
// classified. An upgrade gets a connection of its own, dialed for it
// rather than taken from the pool: a WebSocket may stay open for the
// function's whole time limit, and the pool's MaxConns is for requests.
func (x *exchange) roundTrip(ep *Endpoint) (failure, error) {
	hc := ep.hc
	if x.upgrade {
		c, err := hc.Dial(ep.addr)
		if err != nil {
			var de *dialError
			if errors.As(err, &de) {
				return de.failure(), err
			}
			return failConnect, err
		}
		conn, ok := c.(*countingConn)
		if !ok {
			_ = c.Close()
			return failNotSent, errors.New("gateway: replica connection of unexpected type")
		}
		br, f, err := x.send(hc, conn)
		if f != failNone {
			_ = conn.Close()
			return f, err
		}
		x.hc, x.conn, x.br, x.dialed = hc, conn, br, true
		return failNone, nil
	}
	cc, err := hc.AcquireConn(0, false)
	if err != nil {
		var de *dialError
		if errors.As(err, &de) {
			return de.failure(), err
		}
		return failNotSent, err // the pool is full: nothing was sent
	}
	conn, ok := cc.Conn().(*countingConn)
	if !ok {
		connCall(hc, (*fasthttp.HostClient).CloseConn, any(cc))
		return failNotSent, errors.New("gateway: replica connection of unexpected type")
	}
	br, f, err := x.send(hc, conn)
	if f != failNone {
		connCall(hc, (*fasthttp.HostClient).CloseConn, any(cc))
		return f, err
	}
	x.hc, x.cc, x.conn, x.br = hc, cc, conn, br
	return failNone, nil
}

// send writes x.req (or x.wire, see appendRawRequestHead) to conn and
// reads the response header into x.resp, returning the reader the body
// (or an upgraded protocol) continues in.
// On failure the caller closes conn.
func (x *exchange) send(hc *fasthttp.HostClient, conn *countingConn) (*bufio.Reader, failure, error) {
	written, read := conn.written, conn.read

	// With no response-start timeout the read deadline is the write's:
	// one call sets both, and the runtime arms one timer for them.
	start := x.rev.responseStart
	if start <= 0 {
		start = x.g.cfg.ResponseStartTimeout
	}
	if start <= 0 {
		_ = conn.SetDeadline(x.deadline)
	} else {
		_ = conn.SetWriteDeadline(x.deadline)
	}
	bw := hc.AcquireWriter(conn)
	var err error
	if len(x.wire) > 0 {
		_, err = bw.Write(x.wire)
	} else {
		err = x.req.Write(bw)
	}
	if err == nil {
		// Flush writes what is left of the request in one Write: the last.
		conn.waitNext = start <= 0
		err = bw.Flush()
		conn.waitNext = false
	}
	hc.ReleaseWriter(bw)
	if err == nil && x.reqBody.err != nil {
		err = x.reqBody.err
	}
	if err != nil {
		switch {
		case x.reqBody.err != nil:
			return nil, failBody, x.reqBody.err
		case conn.written == written:
			return nil, failNotSent, err
		case isTimeout(err):
			return nil, failTimeout, err
		}
		return nil, failBroken, err
	}

	if start > 0 {
		readDeadline := x.deadline
		if t := x.g.clock.Now().Add(start); t.Before(readDeadline) {
			readDeadline = t
		}
		_ = conn.SetReadDeadline(readDeadline)
	}
	br := hc.AcquireReader(conn)
	x.resp.Reset()
	x.resp.SkipBody = x.head
	err = readResponse(&x.resp, br)
	if err != nil {
		_ = x.resp.CloseBodyStream()
		hc.ReleaseReader(br)
		switch {
		case isTimeout(err):
			return nil, failTimeout, err
		case conn.read == read:
			return nil, failBroken, err
		}
		return nil, failProtocol, err
	}
	return br, failNone, nil
}

// maxInterimResponses bounds the 1xx answers (other than 101) a replica
// may send before its final one, as fasthttp's own reader does.
const maxInterimResponses = 100

// readResponse reads a replica's answer from br into resp: the header,
// after any interim 1xx answers, and the body. A body that arrived whole
// with the header (the common small answer) is read into resp, so the
// replica's connection can go back to the pool at once and the client's
// answer is written in one piece, with no per-read deadlines; any other
// body (chunked, unknown length, or still on its way: a stream, an SSE
// feed, a download) is left to stream through BodyStream.
func readResponse(resp *fasthttp.Response, br *bufio.Reader) error {
	for n := 0; ; n++ {
		if err := resp.Header.Read(br); err != nil {
			return err
		}
		code := resp.Header.StatusCode()
		if code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols {
			break
		}
		if n >= maxInterimResponses {
			return errTooManyInterim
		}
	}
	code := resp.Header.StatusCode()
	if resp.SkipBody || code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified {
		return nil
	}
	cl := resp.Header.ContentLength()
	resp.StreamBody = cl < 0 || br.Buffered() < cl
	return resp.ReadBody(br, 0)
}

var errTooManyInterim = errors.New("gateway: too many interim responses from the replica")

// finishUpstream returns or closes the connection of a successful
// exchange. A pooled connection is reused only when the answer was read
// to its end and neither side asked to close; a dialed one is closed.
func (x *exchange) finishUpstream(complete bool) {
	if x.cc == nil && !x.dialed {
		return
	}
	_ = x.resp.CloseBodyStream() // before the reader it reads from goes back to the pool
	x.hc.ReleaseReader(x.br)
	switch {
	case x.dialed:
		_ = x.conn.Close()
	case complete && !x.resp.ConnectionClose():
		connCall(x.hc, (*fasthttp.HostClient).ReleaseConn, x.cc)
	default:
		connCall(x.hc, (*fasthttp.HostClient).CloseConn, x.cc)
	}
	x.hc, x.cc, x.conn, x.br, x.dialed = nil, nil, nil, nil, false
}

// relay is the response body as the client's answer streams it: fasthttp
// reads it after the handler returned (flushing each chunk, so server-sent
// events reach the client as the replica writes them) and closes it when
// the answer is written or the client is gone. Close ends the exchange.
type relay struct {
	x   *exchange
	eof bool
	err error
}

var _ fasthttp.ReadCloserWithError = (*relay)(nil)

func (r *relay) Read(p []byte) (int, error) {
	x := r.x
	idle := x.rev.idle
	if idle <= 0 {
		idle = x.g.cfg.IdleStreamTimeout
	}
	deadline := x.g.clock.Now().Add(idle)
	if x.deadline.Before(deadline) {
		deadline = x.deadline
	}
	_ = x.conn.SetReadDeadline(deadline)
	n, err := x.resp.BodyStream().Read(p)
	if err == io.EOF {
		r.eof = true
	} else if err != nil {
		r.err = err
	}
	return n, err
}

// CloseWithError implements fasthttp.ReadCloserWithError; err is the
// error writing to the client, if any.
func (r *relay) CloseWithError(err error) error {
	x := r.x
	x.finishUpstream(r.eof && err == nil)
	x.failed = r.err != nil // the replica's side broke; a client that left is not the revision's failure
	x.g.finish(x)
	return nil
}

// isTimeout reports a deadline error: net's, or fasthttp's ErrTimeout,
// which has Timeout but is no net.Error.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
