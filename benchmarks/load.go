package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// OpenLoopConfig is one open-loop run: requests are sent on a fixed
// schedule whatever the answers' latency.
type OpenLoopConfig struct {
	// Addr is the server's ip:port; Host is sent as the Host header.
	Addr, Host string
	// Rate is requests per second, over all connections.
	Rate float64
	// Conns is how many keep-alive connections carry the load; each sends
	// its share of the schedule, one request at a time.
	Conns int
	// Warmup is run at Rate before Duration, and not recorded.
	Warmup, Duration time.Duration
	// CPU, if not negative, pins the generator's thread to that core.
	CPU int
}

// OpenLoopResult is an open-loop run's latencies.
type OpenLoopResult struct {
	// Samples are the latencies of the recorded requests, failed ones
	// included.
	Samples []time.Duration
	// Errors counts the failed requests (broken connections and answers
	// other than 200).
	Errors int64
	// Late is the share of recorded requests sent more than a millisecond
	// after they were due while their connection was free: the generator,
	// not the server, fell behind. Above a few percent the run measures
	// the generator.
	Late float64
}

// OpenLoop sends cfg.Rate requests per second for cfg.Warmup+cfg.Duration
// and returns the latency of those of cfg.Duration.
//
// It follows wrk2 (github.com/giltene/wrk2) on one thread: request i of
// connection c is due at start + (i*Conns + c)/Rate, and a request that
// waits for its connection because the server is slow with the one before
// is charged that wait, so a stalled connection counts against every
// request queued behind it instead of quietly sending fewer (coordinated
// omission, Gil Tene, "How NOT to Measure Latency"). Latency is
//
//	(answer read − sent) + (connection free − due, when positive)
//
// which leaves out only the generator's own delay between a request being
// due on a free connection and its sending. The loop wakes on a fixed tick
// (openLoopTick) and sends everything due: a timer per request costs more
// CPU than the request itself in a virtual machine, and a goroutine per
// connection on a one-core Go runtime keeps no schedule at all (timers
// starve the netpoller).
func OpenLoop(ctx context.Context, cfg OpenLoopConfig) (OpenLoopResult, error) {
	if cfg.Rate <= 0 || cfg.Conns <= 0 || cfg.Duration <= 0 || cfg.Warmup < 0 {
		return OpenLoopResult{}, fmt.Errorf("open loop: rate %v, conns %d, duration %v, warmup %v: need positive values", cfg.Rate, cfg.Conns, cfg.Duration, cfg.Warmup)
	}
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil || !ap.Addr().Is4() {
		return OpenLoopResult{}, fmt.Errorf("open loop: address %q is not an IPv4 ip:port", cfg.Addr)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cfg.CPU >= 0 {
		var old, pin unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return OpenLoopResult{}, fmt.Errorf("open loop: read CPU affinity: %w", err)
		}
		pin.Set(cfg.CPU)
		// Pid 0 is this thread only: the rest of the process stays free.
		if err := unix.SchedSetaffinity(0, &pin); err != nil {
			return OpenLoopResult{}, fmt.Errorf("open loop: pin to CPU %d: %w", cfg.CPU, err)
		}
		defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	}
	l, err := newLoop(ap, cfg)
	if err != nil {
		return OpenLoopResult{}, err
	}
	defer l.close()
	if err := l.run(ctx); err != nil {
		return OpenLoopResult{}, err
	}
	return l.result()
}

// olConn is one connection of the loop.
type olConn struct {
	fd       int
	next     int64 // index of this connection's next request
	inflight bool
	due      int64 // when the in-flight request was due, ns since the loop's base
	sentAt   int64 // when it was sent
	freeAt   int64 // when the last answer completed
	record   bool
	buf      []byte
	n        int
}

type loop struct {
	cfg      OpenLoopConfig
	sa       *unix.SockaddrInet4
	req      []byte
	base     time.Time
	interval float64 // ns between two requests of one connection
	start    int64   // ns since base: the schedule's zero
	recordAt int64
	end      int64
	ep, tfd  int
	conns    []*olConn
	byFD     map[int]*olConn

	lat        []int64
	errs, late int64
	firstErr   error
}

// openLoopTick is how often the generator wakes to send what is due. The
// load it offers is bursty at this scale only: at 40,000 requests per
// second, 8 requests leave together.
const openLoopTick = 200 * time.Microsecond

// lateAfter: a request sent later than this after it was due on a free
// connection is late, the generator's fault.
const lateAfter = int64(time.Millisecond)

func newLoop(ap netip.AddrPort, cfg OpenLoopConfig) (*loop, error) {
	l := &loop{
		cfg:      cfg,
		sa:       &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()},
		req:      []byte("GET / HTTP/1.1\r\nHost: " + cfg.Host + "\r\nUser-Agent: surge-openloop\r\n\r\n"),
		interval: float64(time.Second) * float64(cfg.Conns) / cfg.Rate,
		byFD:     map[int]*olConn{},
		ep:       -1,
		tfd:      -1,
	}
	l.lat = make([]int64, 0, int(cfg.Rate*cfg.Duration.Seconds()*1.05)+16)
	var err error
	if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("open loop: epoll: %w", err)
	}
	if l.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		l.close()
		return nil, fmt.Errorf("open loop: timerfd: %w", err)
	}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.tfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.tfd)}); err != nil {
		l.close()
		return nil, fmt.Errorf("open loop: watch timer: %w", err)
	}
	tick := unix.NsecToTimespec(int64(openLoopTick))
	if err := unix.TimerfdSettime(l.tfd, 0, &unix.ItimerSpec{Interval: tick, Value: tick}, nil); err != nil {
		l.close()
		return nil, fmt.Errorf("open loop: arm timer: %w", err)
	}
	for range cfg.Conns {
		c := &olConn{fd: -1, buf: make([]byte, 16<<10)}
		if err := l.dial(c); err != nil {
			l.close()
			return nil, err
		}
		l.conns = append(l.conns, c)
	}
	l.base = time.Now()
	l.start = int64(10 * time.Millisecond)
	l.recordAt = l.start + int64(cfg.Warmup)
	l.end = l.recordAt + int64(cfg.Duration)
	return l, nil
}

// dial (re)connects c: blocking connect (loopback answers at once), then
// non-blocking I/O under epoll.
func (l *loop) dial(c *olConn) error {
	if c.fd >= 0 {
		delete(l.byFD, c.fd)
		_ = unix.Close(c.fd) // closing removes it from epoll
	}
	c.fd, c.n, c.inflight = -1, 0, false
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open loop: socket: %w", err)
	}
	if err := unix.Connect(fd, l.sa); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("open loop: connect to %s: %w", l.cfg.Addr, err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("open loop: nonblock: %w", err)
	}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("open loop: watch connection: %w", err)
	}
	c.fd = fd
	l.byFD[fd] = c
	return nil
}

func (l *loop) close() {
	for _, c := range l.conns {
		if c.fd >= 0 {
			_ = unix.Close(c.fd)
		}
	}
	if l.tfd >= 0 {
		_ = unix.Close(l.tfd)
	}
	if l.ep >= 0 {
		_ = unix.Close(l.ep)
	}
}

func (l *loop) now() int64 { return int64(time.Since(l.base)) }

func (l *loop) dueOf(ci int, i int64) int64 {
	return l.start + int64((float64(i)*float64(len(l.conns))+float64(ci))*l.interval/float64(len(l.conns)))
}

// run keeps the schedule until it ends and every answer is in, or ctx ends.
func (l *loop) run(ctx context.Context) error {
	events := make([]unix.EpollEvent, len(l.conns)+1)
	hardStop := l.end + int64(10*time.Second) // answers still missing then count as errors
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := l.now()
		pending := false
		for ci, c := range l.conns {
			if c.inflight {
				pending = true
				continue
			}
			due := l.dueOf(ci, c.next)
			if due >= l.end {
				continue
			}
			pending = true
			if due > now {
				continue
			}
			c.next++
			c.due, c.sentAt, c.record = due, now, due >= l.recordAt
			if c.record && now-max(due, c.freeAt) > lateAfter {
				l.late++
			}
			if err := l.send(c); err != nil {
				l.fail(c, err)
			}
		}
		if !pending {
			return nil
		}
		if now > hardStop {
			for _, c := range l.conns {
				if c.inflight {
					l.fail(c, errors.New("no answer 10s after the run"))
				}
			}
			return nil
		}
		n, err := unix.EpollWait(l.ep, events, 100)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("open loop: epoll wait: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == l.tfd {
				var b [8]byte
				_, _ = unix.Read(l.tfd, b[:])
				continue
			}
			if c := l.byFD[fd]; c != nil {
				l.readable(c)
			}
		}
	}
}

func (l *loop) send(c *olConn) error {
	n, err := unix.Write(c.fd, l.req)
	if err != nil {
		return err
	}
	if n != len(l.req) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(l.req))
	}
	c.inflight = true
	return nil
}

// readable reads what arrived on c and completes its request when the
// answer is whole.
func (l *loop) readable(c *olConn) {
	for {
		if c.n == len(c.buf) {
			l.fail(c, errors.New("answer larger than the read buffer"))
			return
		}
		m, err := unix.Read(c.fd, c.buf[c.n:])
		if err == unix.EAGAIN {
			return
		}
		if err != nil || m == 0 {
			if err == nil {
				err = errors.New("connection closed")
			}
			l.fail(c, err)
			return
		}
		c.n += m
		status, size, closeAfter, ok := parseAnswer(c.buf[:c.n])
		if !ok {
			continue
		}
		if !c.inflight || size != c.n {
			l.fail(c, errors.New("unexpected bytes from the server"))
			return
		}
		done := l.now()
		if c.record {
			l.lat = append(l.lat, c.latency(done))
			if status != 200 {
				l.errs++
				if l.firstErr == nil {
					l.firstErr = fmt.Errorf("answered %d", status)
				}
			}
		}
		c.inflight, c.n, c.freeAt = false, 0, done
		if closeAfter {
			if err := l.dial(c); err != nil && l.firstErr == nil {
				l.firstErr = err
			}
		}
		return
	}
}

// latency is the in-flight request's latency if its answer completed at
// done: see OpenLoop.
func (c *olConn) latency(done int64) int64 {
	return done - c.sentAt + max(c.freeAt-c.due, 0)
}

// fail counts c's in-flight request as failed and reconnects c.
func (l *loop) fail(c *olConn, err error) {
	now := l.now()
	if c.inflight && c.record {
		l.lat = append(l.lat, c.latency(now))
		l.errs++
	}
	c.freeAt = now
	if l.firstErr == nil {
		l.firstErr = err
	}
	if derr := l.dial(c); derr != nil {
		c.next = 1 << 62 // give the connection up
	}
}

func (l *loop) result() (OpenLoopResult, error) {
	if len(l.lat) == 0 {
		return OpenLoopResult{}, fmt.Errorf("open loop: no request was recorded (%v)", l.firstErr)
	}
	res := OpenLoopResult{
		Samples: make([]time.Duration, len(l.lat)),
		Errors:  l.errs,
		Late:    float64(l.late) / float64(len(l.lat)),
	}
	for i, v := range l.lat {
		res.Samples[i] = time.Duration(v)
	}
	if n := int64(len(l.lat)); res.Errors > n/1000 {
		return res, fmt.Errorf("open loop: %d of %d requests failed, first: %v", res.Errors, n, l.firstErr)
	}
	return res, nil
}

// parseAnswer looks for one whole HTTP/1.1 answer at the start of b. It
// returns the status, the answer's size in bytes, whether the server
// closes the connection after it, and whether the answer is whole yet.
// Bodies are framed by Content-Length or chunked encoding.
func parseAnswer(b []byte) (status, size int, closeAfter, ok bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 || len(b) < 12 {
		return 0, 0, false, false
	}
	head := b[:end]
	status, err := strconv.Atoi(string(b[9:12]))
	if err != nil {
		status = 0
	}
	cl, chunked := -1, false
	_, rest, _ := bytes.Cut(head, []byte("\r\n")) // the status line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if v, err := strconv.Atoi(string(value)); err == nil {
				cl = v
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeAfter = bytes.EqualFold(value, []byte("close"))
		}
	}
	bodyStart := end + 4
	switch {
	case chunked:
		// Enough for the small answers of these benchmarks: the body ends
		// with the last-chunk and an empty trailer.
		if i := bytes.Index(b[bodyStart:], []byte("0\r\n\r\n")); i >= 0 && (i == 0 || b[bodyStart+i-1] == '\n') {
			return status, bodyStart + i + 5, closeAfter, true
		}
		return 0, 0, false, false
	case cl >= 0:
		if len(b) >= bodyStart+cl {
			return status, bodyStart + cl, closeAfter, true
		}
		return 0, 0, false, false
	}
	return status, bodyStart, closeAfter, true // no body (204, 304)
}
