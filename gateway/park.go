package gateway

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// An idle keep-alive connection costs fasthttp what a request costs: its
// worker goroutine's stack, a RequestCtx and a read buffer, all held while
// the connection waits for its next request (fasthttp gives the last two
// back only without StreamRequestBody, which the gateway needs to stream
// request bodies). parking gives them back: a client connection that has
// waited for its next request for ParkIdleAfter leaves fasthttp, and
// waits in an epoll set of the gateway's own instead (a poller), with no
// goroutine and no buffer, until a byte comes — then it is served again
// (fasthttp's ServeConn) — or its idle timeout passes, or the gateway
// drains — then it is closed. A parked connection costs its socket and a
// clientConn, about a kibibyte (B8); waking one costs a goroutine and
// fasthttp's set-up of a connection, a few microseconds, so only
// connections idle for a while are parked.
//
// The request path pays two atomic adds a request (clientConn.Read): a
// sweep, every ParkIdleAfter/2 on the gateway's Clock, finds the
// connections that have waited for their next request since the sweep
// before, and makes their read return at once (a read deadline in the
// past); Read then returns errParked, which fasthttp takes for a
// keep-alive connection's quiet end, and fasthttp's Close parks it.

// errParked ends fasthttp's wait for a next request on a connection that
// is being parked. It is a temporary net.Error so that a TLS connection
// over the clientConn (tls.go) takes it for a read to try again later,
// and keeps its session for when the connection is woken, rather than
// failing for good.
var errParked error = parkedError{}

type parkedError struct{}

func (parkedError) Error() string   { return "gateway: idle connection parked" }
func (parkedError) Timeout() bool   { return false }
func (parkedError) Temporary() bool { return true }

var _ net.Error = parkedError{}

// poller waits for any of a set of descriptors to become readable. The
// epoll one (park_linux.go) is the only one; elsewhere connections are
// never parked.
type poller interface {
	// add watches fd until it becomes readable once.
	add(fd int) error
	// del stops watching fd.
	del(fd int)
	// wait returns the descriptors that became readable, waiting up to d,
	// or until wake; it appends to fds.
	wait(fds []int, d time.Duration) ([]int, error)
	// wake ends a wait at once; it may be called from any goroutine.
	wake()
	close()
}

// parking is the gateway's idle-connection parking: the registry of its
// open client connections, the sweep, and the parked connections.
type parking struct {
	after       time.Duration // ParkIdleAfter
	idleTimeout time.Duration
	maxConns    int
	clock       clock.Clock
	log         *slog.Logger
	// serve serves a woken connection until it ends or is parked again
	// (fasthttp's ServeConn); it runs on a goroutine of its own.
	serve func(net.Conn) error
	poll  poller

	swept atomic.Int64 // sweeps so far, for tests
	parks atomic.Int64 // connections parked so far
	wakes atomic.Int64 // parked connections woken so far

	mu      sync.Mutex
	conns   []*clientConn       // every open client connection, parked or not
	parked  map[int]*clientConn // by descriptor
	stopped bool
	served  sync.WaitGroup // woken connections' goroutines
	done    chan struct{}  // closed when run returns
}

// newParking returns the parking of a gateway, or nil (connections are
// never parked) when after is 0 or the system has no poller.
func newParking(after, idleTimeout time.Duration, maxConns int, clk clock.Clock, log *slog.Logger, serve func(net.Conn) error) *parking {
	if after <= 0 {
		return nil
	}
	p, err := newPoller()
	if err != nil {
		log.Warn("idle connections will not be parked", "err", err)
		return nil
	}
	return &parking{
		after: after, idleTimeout: idleTimeout, maxConns: maxConns, clock: clk, log: log,
		serve: serve, poll: p, parked: map[int]*clientConn{}, done: make(chan struct{}),
	}
}

// add registers a newly accepted connection, or reports false when the
// gateway holds MaxConns already: then the caller closes it.
func (p *parking) add(c *clientConn) bool {
	fd := -1
	if sc, ok := c.Conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(d uintptr) { fd = int(d) })
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) >= p.maxConns {
		return false
	}
	c.park = p
	if !p.stopped {
		c.fd = fd // -1 without a descriptor: never parked, only counted
	}
	c.idx = len(p.conns)
	p.conns = append(p.conns, c)
	return true
}

// forget takes a closed connection out of the registry.
func (p *parking) forget(c *clientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetLocked(c)
}

func (p *parking) forgetLocked(c *clientConn) {
	i := c.idx
	if i < 0 || i >= len(p.conns) || p.conns[i] != c {
		return
	}
	last := p.conns[len(p.conns)-1]
	p.conns[i], last.idx = last, i
	p.conns[len(p.conns)-1] = nil
	p.conns = p.conns[:len(p.conns)-1]
	c.idx = -1
}

// park takes over c, which fasthttp has just let go of after Read
// returned errParked, and reports whether it did; if not, the caller
// closes c.
func (p *parking) park(c *clientConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	c.buf = nil // the held answer's buffer: a new one when served again
	c.parkedAt = p.clock.Now()
	p.parked[c.fd] = c
	if err := p.poll.add(c.fd); err != nil {
		delete(p.parked, c.fd)
		p.log.Warn("park idle connection", "err", err)
		return false
	}
	p.parks.Add(1)
	return true
}

// run sweeps and wakes until stop. Call it once.
func (p *parking) run() {
	defer close(p.done)
	period := p.after / 2
	next := p.clock.Now().Add(period)
	var fds []int
	for {
		var err error
		fds, err = p.poll.wait(fds[:0], max(p.clock.Until(next), time.Millisecond))
		if err != nil {
			p.log.Error("idle connection poller failed; parked connections are closed", "err", err)
			return
		}
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		for _, fd := range fds {
			c := p.parked[fd]
			if c == nil {
				continue
			}
			delete(p.parked, fd)
			p.poll.del(fd)
			p.wakes.Add(1)
			p.served.Go(func() { _ = p.serve(c.outer) }) // over TLS, the tlsConn
		}
		if now := p.clock.Now(); !now.Before(next) {
			p.sweepLocked(now)
			next = now.Add(period)
		}
		p.mu.Unlock()
	}
}

// sweepLocked asks the connections that have waited for their next
// request since the last sweep to park, and closes the parked ones whose
// idle timeout has passed.
func (p *parking) sweepLocked(now time.Time) {
	defer p.swept.Add(1)
	for _, c := range p.conns {
		g := c.idleGen.Load()
		if g&1 == 1 && g == c.seenGen && !c.parkAsked.Load() {
			c.parkAsked.Store(true)
			c.dl.interruptRead()
		}
		c.seenGen = g
	}
	for fd, c := range p.parked {
		if now.Sub(c.parkedAt) >= p.idleTimeout {
			delete(p.parked, fd)
			p.poll.del(fd)
			p.forgetLocked(c)
			_ = c.closeConn()
		}
	}
}

// stop closes every parked connection, parks no more, and returns once
// run has. Woken connections go on being served: fasthttp's Shutdown
// waits for them; wait waits for their goroutines.
func (p *parking) stop() {
	p.mu.Lock()
	p.stopped = true
	for fd, c := range p.parked {
		delete(p.parked, fd)
		p.forgetLocked(c)
		_ = c.closeConn()
	}
	p.mu.Unlock()
	p.poll.wake()
	<-p.done
	p.poll.close()
}

// sweeps is how many sweeps were made.
func (p *parking) sweeps() int64 { return p.swept.Load() }

// wait returns once the goroutines serving woken connections have ended.
func (p *parking) wait() { p.served.Wait() }
