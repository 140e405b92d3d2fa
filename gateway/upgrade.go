package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/internal/clock"
)

// WebSocket passthrough. A GET that asks to switch to WebSocket (RFC 6455
// §4.1) is routed like any request, and sent to the replica with its
// Upgrade and Connection headers — the one case where they are passed on —
// over a connection dialed for it. When the replica answers 101, the
// gateway passes the answer on, takes the client's connection over from
// fasthttp (RequestCtx.Hijack) and copies bytes both ways between the two
// connections until either side closes, nothing crosses either way for the
// revision's idle timeout, or the revision's total limit passes. While the
// tunnel is open it counts as one request in flight, for the replica's
// concurrency limit, the autoscaler's stats and the in-flight gauge.
//
// Only WebSocket is tunnelled. Passing other upgrades on — h2c above all —
// would let a client speak a protocol to the replica that the gateway
// cannot see into, past its framing checks ("h2c smuggling").

// isWebSocketUpgrade reports whether h, a client's request header, asks to
// switch to WebSocket: an HTTP/1.1 GET without a body whose Upgrade names
// websocket and whose Connection names upgrade. Ordinary requests cost one
// header lookup.
func isWebSocketUpgrade(h *fasthttp.RequestHeader) bool {
	if len(h.Peek(fasthttp.HeaderUpgrade)) == 0 {
		return false
	}
	// ContentLength is -2 when the request has neither Content-Length nor
	// Transfer-Encoding, and -1 when it is chunked.
	if cl := h.ContentLength(); cl > 0 || cl == -1 || !h.IsGet() || !h.IsHTTP11() {
		return false
	}
	return hasToken(h.PeekAll(fasthttp.HeaderUpgrade), "websocket") &&
		hasToken(h.PeekAll(fasthttp.HeaderConnection), "upgrade")
}

// isWebSocketAccept reports whether a replica's 101 answer switches to
// WebSocket, the only protocol the gateway asks for.
func isWebSocketAccept(h *fasthttp.ResponseHeader) bool {
	return hasToken(h.PeekAll(fasthttp.HeaderUpgrade), "websocket")
}

// hasToken reports whether one of the comma-separated lists in values
// holds token, compared without regard to ASCII case. token is lowercase.
func hasToken(values [][]byte, token string) bool {
	found := false
	for _, v := range values {
		forEachToken(v, func(tok []byte) {
			if asciiEqualFold(tok, token) {
				found = true
			}
		})
	}
	return found
}

// Tunnel states.
const (
	tunnelPending int32 = iota // 101 answered; fasthttp has not handed over the connection yet
	tunnelRunning              // copying
	tunnelDone                 // ended, or abandoned before it ran
)

// Tunnel errors.
var (
	// errTunnelStopped ends a tunnel's copying when the other direction
	// ended or the gateway shuts down.
	errTunnelStopped = errors.New("gateway: tunnel stopped")
	// errTunnelsFull refuses a tunnel when Config.MaxConns are open.
	errTunnelsFull = errors.New("gateway: too many open tunnels")
	// errTunnelsClosed refuses a tunnel once the gateway drains.
	errTunnelsClosed = errors.New("gateway: draining")
)

// msgTooManyTunnels answers an upgrade when MaxConns tunnels are open.
const msgTooManyTunnels = "too many WebSockets are open on this gateway; retry later"

// aLongTimeAgo is a deadline in the past: setting it makes a blocked Read
// or Write on a connection return at once.
var aLongTimeAgo = time.Unix(1, 0)

// tunnel is one upgraded connection pair. It owns its exchange x (and so
// the replica connection, the endpoint's slot and the request's
// accounting) until end.
type tunnel struct {
	g        *Gateway
	x        *exchange
	up       *countingConn
	upR      *bufio.Reader // the replica's side; may hold bytes sent right after the 101
	idle     time.Duration
	deadline time.Time

	last    atomic.Int64 // unix nanoseconds of the last byte either way
	state   atomic.Int32
	stopped atomic.Bool
	guard   clock.Timer
	endOnce sync.Once

	// mu guards client, the hijacked connection, which is only valid
	// while the hijack handler runs: fasthttp reuses it after.
	mu     sync.Mutex
	client net.Conn
}

// tunnel answers the client with the replica's 101 and has fasthttp hand
// the client's connection over once the answer is written.
func (g *Gateway) tunnel(ctx *fasthttp.RequestCtx, x *exchange) {
	idle := x.rev.idle
	if idle <= 0 {
		idle = g.cfg.IdleStreamTimeout
	}
	t := &tunnel{g: g, x: x, up: x.conn, upR: x.br, idle: idle, deadline: x.deadline}
	t.touch()
	// fasthttp does not call the hijack handler when writing the 101 fails
	// or the server is shutting down; the guard then ends the tunnel, once
	// the write would have timed out. It is set before the tunnel is
	// registered, where a drain may stop it.
	t.guard = g.clock.AfterFunc(g.cfg.WriteTimeout+time.Second, func() {
		if t.state.CompareAndSwap(tunnelPending, tunnelDone) {
			t.end()
		}
	})
	if err := g.tunnels.add(t, g.cfg.MaxConns); err != nil {
		t.guard.Stop()
		ctx.SetConnectionClose()
		if errors.Is(err, errTunnelsFull) {
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfterSeconds)
			g.answer(ctx, x, fasthttp.StatusServiceUnavailable, msgTooManyTunnels)
		} else {
			g.answer(ctx, x, fasthttp.StatusServiceUnavailable, msgDraining)
		}
		return
	}
	copyResponseHeader(&ctx.Response.Header, &x.resp.Header)
	ctx.Response.Header.Set(fasthttp.HeaderUpgrade, "websocket")
	ctx.Response.Header.Set(fasthttp.HeaderConnection, "Upgrade")

	// The 101 goes out unheld, and the tunnel reads and writes at once.
	holdNothing(ctx.Conn())
	ctx.Hijack(func(c net.Conn) {
		if !t.state.CompareAndSwap(tunnelPending, tunnelRunning) {
			return
		}
		t.guard.Stop()
		t.run(c)
		t.end()
	})
}

// run copies between the client's connection c and the replica's until
// one direction ends, then stops the other. It returns when both have.
func (t *tunnel) run(c net.Conn) {
	t.mu.Lock()
	t.client = c
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.client = nil
		t.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := acquireTunnelBuf()
		defer releaseTunnelBuf(buf)
		_ = t.pipe(c, t.upR, t.up, *buf)
		t.stop()
	}()
	buf := acquireTunnelBuf()
	defer releaseTunnelBuf(buf)
	_ = t.pipe(t.up, c, c, *buf)
	t.stop()
	<-done
}

// pipe copies src (which reads srcConn) to dst until a read or write
// fails, the tunnel stops, or the tunnel is idle or past its deadline.
// A read that times out while the other direction is busy goes on.
func (t *tunnel) pipe(dst net.Conn, src io.Reader, srcConn net.Conn, buf []byte) error {
	for {
		// Set the deadline, then look at stopped: stop sets them the
		// other way round, so one of the two sees the other's.
		_ = srcConn.SetReadDeadline(t.nextDeadline())
		if t.stopped.Load() {
			return errTunnelStopped
		}
		n, err := src.Read(buf)
		if n > 0 {
			t.touch()
			_ = dst.SetWriteDeadline(t.nextDeadline())
			if t.stopped.Load() {
				return errTunnelStopped
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			t.touch()
		}
		if err != nil {
			if isTimeout(err) && !t.stopped.Load() && t.g.clock.Now().Before(t.nextDeadline()) {
				continue // the other direction kept the tunnel alive
			}
			return err
		}
	}
}

func (t *tunnel) touch() { t.last.Store(t.g.clock.Now().UnixNano()) }

// nextDeadline is when the tunnel ends if no byte crosses it before.
func (t *tunnel) nextDeadline() time.Time {
	d := time.Unix(0, t.last.Load()).Add(t.idle)
	if t.deadline.Before(d) {
		return t.deadline
	}
	return d
}

// stop makes both directions' blocked reads and writes return, and keeps
// them from blocking again.
func (t *tunnel) stop() {
	t.stopped.Store(true)
	_ = t.up.SetDeadline(aLongTimeAgo)
	t.mu.Lock()
	if t.client != nil {
		_ = t.client.SetDeadline(aLongTimeAgo)
	}
	t.mu.Unlock()
}

// end closes the replica connection and ends the request's accounting.
// fasthttp closes the client's connection when the hijack handler returns.
func (t *tunnel) end() {
	t.endOnce.Do(func() {
		t.g.finish(t.x) // closes the dialed replica connection
		t.g.tunnels.remove(t)
	})
}

// shutdown ends t however far it got.
func (t *tunnel) shutdown() {
	if t.state.CompareAndSwap(tunnelPending, tunnelDone) {
		t.guard.Stop()
		t.end()
		return
	}
	t.stop()
}

var tunnelBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func acquireTunnelBuf() *[]byte  { return tunnelBufPool.Get().(*[]byte) }
func releaseTunnelBuf(b *[]byte) { tunnelBufPool.Put(b) }

// tunnelSet is the gateway's open tunnels, which fasthttp no longer
// tracks once it handed their connections over: for the drain, and for
// Config.MaxConns, which fasthttp's Concurrency no longer applies to.
type tunnelSet struct {
	mu     sync.Mutex
	open   map[*tunnel]struct{}
	closed bool // draining: no new tunnels
	wg     sync.WaitGroup
}

// add registers t, unless limit tunnels are open or the gateway drains.
func (s *tunnelSet) add(t *tunnel, limit int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errTunnelsClosed
	case len(s.open) >= limit:
		return errTunnelsFull
	}
	if s.open == nil {
		s.open = map[*tunnel]struct{}{}
	}
	s.open[t] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *tunnelSet) remove(t *tunnel) {
	s.mu.Lock()
	delete(s.open, t)
	s.mu.Unlock()
	s.wg.Done()
}

// len is how many tunnels are open.
func (s *tunnelSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// drain refuses new tunnels, lets open ones run until they end or ctx
// does, then stops the rest, and returns once every tunnel has ended.
func (s *tunnelSet) drain(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	open := make([]*tunnel, 0, len(s.open))
	for t := range s.open {
		open = append(open, t)
	}
	s.mu.Unlock()
	for _, t := range open {
		t.shutdown()
	}
	<-done
}
