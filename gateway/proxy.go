package gateway

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/internal/clock"
)

// exchange is one proxied request: everything the request path needs,
// pooled and reset between uses, so that a request in steady state
// allocates nothing. It lives from the handler's start until the
// response body has been written (relay.CloseWithError), which may be
// after the handler returned; it never holds the *fasthttp.RequestCtx.
type exchange struct {
	g *Gateway

	req  fasthttp.Request  // to the replica
	resp fasthttp.Response // from the replica

	scratch []byte // lowercased host
	uri     []byte // request URI for the replica
	xff     []byte // X-Forwarded-For value
	body    []byte // replayable request body
	wire    []byte // the request header as sent, when made by appendRawRequestHead

	reqBody bodyReader
	relay   relay

	rev      *revision
	ep       *Endpoint
	start    time.Time
	deadline time.Time
	code     int
	// answered is when the replica's answer header came, for an answer
	// whose body streams after the handler returned (or a tunnel): its
	// latency ends there. Zero when the answer is complete at finish.
	answered time.Time
	// failed marks an answer that broke off mid-body on the replica's side.
	failed bool

	// queued: the request found no replica with room and waited; cold:
	// it found no replica at all; coldFirst: it is the first of its
	// revision's cold start (see revision.coldStart); coldMs: how long it
	// waited for its replica, for Surge-Cold-Start, -1 before it got one.
	queued, cold, coldFirst bool
	coldMs                  int64
	retries                 int32
	replica                 string               // the address of the replica that answered
	tp                      [traceparentLen]byte // a traceparent made for the request
	num                     []byte               // scratch for a header's digits
	log                     accessRecord         // filled only with an access log

	head       bool // HEAD: the answer has no body
	idempotent bool
	streamed   bool // the request body streams from the client
	upgrade    bool // a WebSocket handshake: tunnel on 101 (upgrade.go)

	// the checked-out replica connection of a successful attempt: from
	// the pool (cc), or dialed for an upgrade (dialed)
	hc     *fasthttp.HostClient
	cc     any // fasthttp's *clientConn, see connCall
	dialed bool
	conn   *countingConn
	br     *bufio.Reader
}

var exchangePool sync.Pool

func (g *Gateway) acquireExchange() *exchange {
	x, _ := exchangePool.Get().(*exchange)
	if x == nil {
		x = &exchange{coldMs: -1}
		x.relay.x = x
	}
	x.g = g
	return x
}

func releaseExchange(x *exchange) {
	x.req.Reset()
	x.resp.Reset()
	x.reqBody = bodyReader{}
	x.wire = x.wire[:0]
	x.relay = relay{x: x}
	x.g, x.rev, x.ep = nil, nil, nil
	x.code = 0
	x.answered, x.failed = time.Time{}, false
	x.queued, x.cold, x.coldFirst, x.coldMs, x.retries, x.replica = false, false, false, -1, 0, ""
	x.head, x.idempotent, x.streamed, x.upgrade = false, false, false, false
	if cap(x.body) > 1<<20 {
		x.body = nil // keep the pool's memory bounded
	}
	exchangePool.Put(x)
}

// Routing and gateway-made answers.
var (
	msgNoFunction     = "no function is served at this address"
	msgNoRevision     = "no revision of this function takes traffic yet"
	msgRevisionGone   = "the revision was removed while the request waited"
	msgUnknownRev     = "the revision named by Surge-Revision is not one of this function's that take traffic or carry a tag"
	msgQueueFull      = "too many requests are waiting for this function; retry later"
	msgGatewayFull    = "the gateway holds as many waiting requests as it has room for; retry later"
	msgTimeout        = "the function did not answer in time"
	msgNoReplicaReady = "no replica of the function was Ready in the time the request could wait"
	msgAllBusy        = "every replica of the function stayed at its concurrency limit for as long as the request could wait"
	msgBadGateway     = "the function's replica could not be reached or answered badly"
	msgBodyTooLarge   = "request body too large"
	msgBadBody        = "the request body could not be read"
	msgBodyTimeout    = "the request body did not arrive in time"
	msgBadFraming     = "malformed request framing"
	msgDraining       = "the gateway is shutting down"
	msgBadUpgrade     = "the function's replica switched to a protocol that was not asked for"
	headerRevision    = "Surge-Revision"
	// headerDebug in a request asks for headerReplica and headerRevision
	// in the answer: the replica that answered, and its revision.
	headerDebug   = "Surge-Debug"
	headerReplica = "Surge-Served-By"
	// strColdStart names the answer's header that says how many
	// milliseconds the request waited for a replica of a revision that had
	// none (a cold start).
	strColdStart = []byte("Surge-Cold-Start")
	// headerIdempotencyKey marks a request its client may send again
	// (draft-ietf-httpapi-idempotency-key-header): the gateway retries it
	// like a GET.
	headerIdempotencyKey = "Idempotency-Key"
	contentTypeJSON      = "application/json"
	retryAfterSeconds    = "1"
)

// serve is the gateway's fasthttp handler.
func (g *Gateway) serve(ctx *fasthttp.RequestCtx) {
	if g.cfg.HealthPath != "" && string(ctx.Path()) == g.cfg.HealthPath {
		g.health(ctx)
		return
	}
	if g.cfg.HTTPSRedirect && !g.secure(ctx) {
		g.redirectHTTPS(ctx)
		return
	}
	if err := checkFraming(ctx.Request.Header.RawHeaders()); err != nil {
		ctx.SetConnectionClose()
		g.rejectUnrouted(ctx, fasthttp.StatusBadRequest, msgBadFraming)
		return
	}

	x := g.acquireExchange()
	x.start = g.requestStart(ctx)
	tbl := g.routes.Load()

	var fr *functionRoute
	path := ctx.URI().PathOriginal()
	rest := path
	key, scratch, ok := hostKey(ctx.Request.Header.Host(), g.cfg.Domain, x.scratch)
	x.scratch = scratch
	if ok {
		fr = tbl.lookup(key)
	} else if g.cfg.PathRouting {
		if k, r, ok := pathKey(path); ok {
			fr, rest = tbl.lookup(k), r
		}
	}
	if fr == nil {
		releaseExchange(x)
		g.rejectUnrouted(ctx, fasthttp.StatusNotFound, msgNoFunction)
		return
	}
	if fr.httpsRedirect && !g.secure(ctx) {
		releaseExchange(x)
		g.redirectHTTPS(ctx)
		return
	}

	var rev *revision
	if name := ctx.Request.Header.Peek(headerRevision); len(name) > 0 {
		if rev = fr.byName[string(name)]; rev == nil {
			releaseExchange(x)
			g.rejectUnrouted(ctx, fasthttp.StatusNotFound, msgUnknownRev)
			return
		}
	} else if rev = pickTarget(fr.targets, rand.Uint64()); rev == nil {
		releaseExchange(x)
		g.rejectUnrouted(ctx, fasthttp.StatusServiceUnavailable, msgNoRevision)
		return
	}

	cl := ctx.Request.Header.ContentLength()
	if cl > g.cfg.MaxRequestBodyBytes {
		releaseExchange(x)
		ctx.SetConnectionClose()
		g.rejectUnrouted(ctx, fasthttp.StatusRequestEntityTooLarge, msgBodyTooLarge)
		return
	}

	// From here the request counts for its revision.
	x.rev = rev
	x.deadline = x.start.Add(rev.timeout)
	x.head = ctx.IsHead()
	x.idempotent = isIdempotent(ctx.Method()) || len(ctx.Request.Header.Peek(headerIdempotencyKey)) > 0
	rev.stats.begin(g.micros(x.start))
	rev.budget.deposit()
	if rev.m != nil {
		rev.m.inflight.Inc()
	}

	x.uri = append(x.uri[:0], rest...)
	if qs := ctx.URI().QueryString(); len(qs) > 0 {
		x.uri = append(x.uri, '?')
		x.uri = append(x.uri, qs...)
	}
	fw := forwardInfo{tls: ctx.IsTLS()}
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		fw.clientIP = ip
		fw.trust = g.trusted.contains(ip)
	}
	// W3C trace context: a client's traceparent goes on as it came; a
	// request without one starts a trace.
	tp := ctx.Request.Header.PeekBytes(strTraceparent)
	if len(tp) == 0 {
		newTraceparent(&x.tp)
		tp, fw.traceparent = x.tp[:], x.tp[:]
	}
	if g.alog != nil {
		x.log.capture(ctx.Method(), ctx.Host(), path, traceID(tp))
		x.log.client = fw.clientIP
	}
	stream := ctx.RequestBodyStream()
	if stream == nil || cl == 0 {
		// No body: the client's header block may go on as it came.
		if wire, ok := appendRawRequestHead(x.wire[:0], &ctx.Request.Header, x.uri, fw); ok {
			x.wire = wire
			g.proxy(ctx, x)
			return
		}
	}
	x.xff = copyRequestHeader(&x.req.Header, &ctx.Request.Header, x.uri, fw, x.xff)
	x.req.Header.SetProtocol("HTTP/1.1")
	if isWebSocketUpgrade(&ctx.Request.Header) {
		// The one hop-by-hop exchange that is passed on: see upgrade.go.
		x.upgrade = true
		x.req.Header.Set(fasthttp.HeaderConnection, "Upgrade")
		x.req.Header.Set(fasthttp.HeaderUpgrade, "websocket")
	}

	// The body: small ones are read now so a retry can send them again;
	// large and chunked ones stream from the client.
	if stream != nil && cl != 0 {
		if cl > 0 && cl <= g.cfg.ReplayBodyBytes {
			if cap(x.body) < cl {
				x.body = make([]byte, cl)
			}
			x.body = x.body[:cl]
			if _, err := io.ReadFull(stream, x.body); err != nil {
				ctx.SetConnectionClose()
				g.answer(ctx, x, fasthttp.StatusBadRequest, msgBadBody)
				return
			}
			if !g.draining.Load() {
				idleNext(ctx.Conn()) // the body is read: the next read is the next request's
			}
			x.req.SetBodyRaw(x.body)
		} else {
			x.streamed = true
			x.reqBody = bodyReader{r: stream, limit: int64(g.cfg.MaxRequestBodyBytes)}
			x.req.SetBodyStream(&x.reqBody, cl)
		}
	}

	g.proxy(ctx, x)
}

// proxy sends the prepared request to a replica, retrying what is safe,
// and sets the client's answer.
func (g *Gateway) proxy(ctx *fasthttp.RequestCtx, x *exchange) {
	rev := x.rev
	var avoid *Endpoint
	for attempt := 0; ; attempt++ {
		now := x.start
		if attempt > 0 {
			now = g.clock.Now()
		}
		ep, status, msg := g.acquire(x, avoid, now)
		if attempt == 0 && x.queued {
			g.waited(x, ep != nil)
		}
		if ep == nil {
			if status == fasthttp.StatusServiceUnavailable {
				ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfterSeconds)
			}
			g.answer(ctx, x, status, msg)
			return
		}
		x.ep = ep
		if x.streamed {
			// The body streams to the replica while the request holds its
			// slot: RequestBodyTimeout bounds that, from now (it may take
			// longer than ReadTimeout, which bounds the header).
			_ = ctx.SetReadDeadline(g.bodyDeadline(x))
			if attempt > 0 {
				x.req.SetBodyStream(&x.reqBody, x.req.Header.ContentLength())
			}
		}
		f, _ := x.roundTrip(ep)
		if f == failNone {
			if x.resp.Header.StatusCode() >= fasthttp.StatusInternalServerError {
				g.outlier(rev, ep, g.clock.Now(), false)
			} else {
				ep.succeeded()
			}
			x.replica = ep.addr
			break
		}
		now = g.clock.Now()
		if (f == failConnect || f == failRefused) && rev.m != nil {
			rev.m.connectErrors.Inc()
		}
		if f.replicaFault() {
			g.outlier(rev, ep, now, f == failRefused)
		}
		x.ep = nil
		ep.release()
		facts := attemptFacts{
			failure:    f,
			idempotent: x.idempotent,
			replayable: !x.streamed || x.reqBody.n == 0,
		}
		if attempt < g.cfg.MaxRetries && retryable(facts) && now.Before(x.deadline) && rev.budget.withdraw() {
			x.retries++
			if rev.m != nil {
				rev.m.retries.Inc()
			}
			avoid = ep
			continue
		}
		switch f {
		case failTimeout:
			g.answer(ctx, x, fasthttp.StatusGatewayTimeout, msgTimeout)
		case failBody:
			ctx.SetConnectionClose()
			switch {
			case x.reqBody.err == errBodyTooLarge:
				g.answer(ctx, x, fasthttp.StatusRequestEntityTooLarge, msgBodyTooLarge)
			case isTimeout(x.reqBody.err):
				g.answer(ctx, x, fasthttp.StatusRequestTimeout, msgBodyTimeout)
			default:
				g.answer(ctx, x, fasthttp.StatusBadRequest, msgBadBody)
			}
		default:
			g.answer(ctx, x, fasthttp.StatusBadGateway, msgBadGateway)
		}
		return
	}

	// The replica answered: pass its header on, and its body as a stream.
	x.code = x.resp.Header.StatusCode()
	if x.code == fasthttp.StatusSwitchingProtocols {
		if x.upgrade && isWebSocketAccept(&x.resp.Header) {
			x.answered = g.clock.Now()
			g.tunnel(ctx, x)
			return
		}
		// Switching protocols unasked, or to another protocol than the
		// one asked for, would leave the client's connection in a state
		// that no longer is HTTP.
		x.finishUpstream(false)
		ctx.SetConnectionClose()
		g.answer(ctx, x, fasthttp.StatusBadGateway, msgBadUpgrade)
		return
	}
	copyResponseHeader(&ctx.Response.Header, &x.resp.Header)
	if len(ctx.Request.Header.Peek(headerDebug)) > 0 {
		// Asked for (surge invoke -v): which replica of which revision
		// answered.
		ctx.Response.Header.Set(headerReplica, x.ep.name)
		ctx.Response.Header.Set(headerRevision, x.rev.key.Name)
	}
	if x.coldMs >= 0 {
		x.num = strconv.AppendInt(x.num[:0], x.coldMs, 10)
		ctx.Response.Header.SetCanonical(strColdStart, x.num)
	}
	if x.resp.BodyStream() == nil {
		// HEAD, 204, 304, or a body that came whole with the header
		// (readResponse): the answer is complete, and the replica's
		// connection free for the next request.
		if body := x.resp.Body(); len(body) > 0 {
			ctx.Response.SetBody(body)
		}
		x.finishUpstream(true)
		if x.head {
			ctx.Response.SkipBody = true
		}
		// fasthttp bounds writing it by WriteTimeout; the function's own
		// limit too, when that comes first.
		if x.deadline.Before(x.start.Add(g.cfg.WriteTimeout)) {
			_ = ctx.SetWriteDeadline(x.deadline)
		} else {
			holdAnswer(ctx.Conn()) // see clientconn.go
		}
		g.finish(x)
		return
	}
	cl := x.resp.Header.ContentLength()
	if cl < 0 {
		cl = -1 // chunked, or read-until-close from the replica: chunked to the client
		ctx.Response.ImmediateHeaderFlush = true
	}
	x.answered = g.clock.Now()
	_ = ctx.SetWriteDeadline(x.deadline)
	ctx.Response.SetBodyStream(&x.relay, cl)
}

// bodyDeadline is when a body that begins to stream now must have
// arrived: RequestBodyTimeout from now, or the request's own deadline
// when that comes first.
func (g *Gateway) bodyDeadline(x *exchange) time.Time {
	if t := g.clock.Now().Add(g.cfg.RequestBodyTimeout); t.Before(x.deadline) {
		return t
	}
	return x.deadline
}

// acquire returns a replica of x's revision with a slot taken, waiting in
// the revision's queue for one when none has room; now is the Clock's.
// When it returns nil, status and msg say what to answer.
func (g *Gateway) acquire(x *exchange, avoid *Endpoint, now time.Time) (*Endpoint, int, string) {
	rev := x.rev
	if ep := g.picker.Pick(rev.endpoints(), avoid, now.UnixNano(), rand.Uint64()); ep != nil {
		return ep, 0, ""
	}
	// Slow path: wait for a slot or a new replica, while the request's
	// deadline allows.
	x.queued = true
	if !x.cold && len(rev.endpoints()) == 0 {
		x.cold = true
		x.coldFirst = rev.coldStart.CompareAndSwap(false, true)
	}
	limit := x.deadline
	if d := g.cfg.MaxQueueWait; d > 0 && now.Add(d).Before(limit) {
		limit = now.Add(d)
	}
	w := acquireWaiter()
	defer releaseWaiter(w)
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for woken := false; ; woken = true {
		if rev.gone.Load() {
			return nil, fasthttp.StatusServiceUnavailable, msgRevisionGone
		}
		if g.draining.Load() {
			return nil, fasthttp.StatusServiceUnavailable, msgDraining
		}
		g.activate(rev, now)
		if woken {
			// Woken for a slot another request took first: still the
			// oldest, so back to the front.
			rev.queue.requeue(w)
		} else {
			switch rev.queue.push(w) {
			case revisionFull:
				if rev.m != nil {
					rev.m.queueFull[queueFullRevision].Inc()
				}
				return nil, fasthttp.StatusServiceUnavailable, msgQueueFull
			case gatewayFull:
				if rev.m != nil {
					rev.m.queueFull[queueFullGateway].Inc()
				}
				return nil, fasthttp.StatusServiceUnavailable, msgGatewayFull
			}
		}
		// A slot freed between the failed pick and the push would have
		// woken nobody: pick once more now that we are queued.
		if ep := g.picker.Pick(rev.endpoints(), avoid, g.clock.Now().UnixNano(), rand.Uint64()); ep != nil {
			if !rev.queue.remove(w) {
				<-w.ch
				rev.queue.wakeOne() // we were woken for a slot we no longer need
			}
			return ep, 0, ""
		}
		if timer == nil {
			timer = g.clock.NewTimer(g.clock.Until(limit))
		}
		select {
		case <-w.ch:
		case <-timer.Chan():
			if !rev.queue.remove(w) {
				<-w.ch
				rev.queue.wakeOne()
			}
			if len(rev.endpoints()) == 0 {
				return nil, fasthttp.StatusGatewayTimeout, msgNoReplicaReady
			}
			return nil, fasthttp.StatusGatewayTimeout, msgAllBusy
		case <-g.drainCh:
			if !rev.queue.remove(w) {
				<-w.ch
				rev.queue.wakeOne()
			}
			return nil, fasthttp.StatusServiceUnavailable, msgDraining
		}
		now = g.clock.Now()
		if ep := g.picker.Pick(rev.endpoints(), avoid, now.UnixNano(), rand.Uint64()); ep != nil {
			return ep, 0, ""
		}
		avoid = nil // any replica will do after a wait
	}
}

// activate asks the Activator for replicas for the revision's demand — the
// requests of it this gateway holds, in flight and waiting, this one
// among them — when a request finds no replica with room: once per
// ActivationInterval, and at once whenever the demand has doubled since
// the last ask, so that a burst of N requests asks for N's replicas within
// log2(N) calls rather than one replica per interval. A demand that grew
// less is asked for activationSettle later (followUps), so the last ask
// of a burst counts all of it.
func (g *Gateway) activate(rev *revision, now time.Time) { g.ask(rev, now, false) }

// activationSettle is how long after a request that raised the demand
// without doubling it the demand is asked for anyway: long enough that a
// burst's requests, arriving together, are asked for in one call.
const activationSettle = 50 * time.Millisecond

func (g *Gateway) ask(rev *revision, now time.Time, followUp bool) {
	if g.activator == nil {
		return
	}
	demand := rev.stats.inFlight()
	asked := rev.lastDemand.Load()
	n := now.UnixNano()
	last := rev.lastActivation.Load()
	if last != 0 && n-last < int64(g.cfg.ActivationInterval) && demand < 2*asked && !(followUp && demand > asked) {
		if demand > asked && rev.followUp.CompareAndSwap(false, true) {
			select {
			case g.followUps <- rev:
			default:
				rev.followUp.Store(false) // full: a later request asks
			}
		}
		return
	}
	if rev.lastActivation.CompareAndSwap(last, n) {
		rev.lastDemand.Store(demand)
		if rev.m != nil {
			rev.m.activations.Inc()
		}
		g.activator.Activate(rev.key.Namespace, rev.function, rev.key.Name, int(demand))
	}
}

// followUpLoop asks, activationSettle after a revision's demand grew
// without doubling, for what it has become, while requests still wait.
// It runs until ctx ends.
func (g *Gateway) followUpLoop(ctx context.Context) {
	for {
		var rev *revision
		select {
		case <-ctx.Done():
			return
		case rev = <-g.followUps:
		}
		if !clock.Sleep(ctx, g.clock, activationSettle) {
			return
		}
		for rev != nil {
			rev.followUp.Store(false)
			if rev.queue.waiting() && !rev.gone.Load() {
				g.ask(rev, g.clock.Now(), true)
			}
			select { // the others that came meanwhile have waited long enough
			case rev = <-g.followUps:
			default:
				rev = nil
			}
		}
	}
}

// outlier records a failed attempt on ep — see Endpoint.failed — and
// counts and logs an ejection.
func (g *Gateway) outlier(rev *revision, ep *Endpoint, now time.Time, dead bool) {
	if !ep.failed(now, rev.endpoints(), g.eject, dead) {
		return
	}
	if rev.m != nil {
		rev.m.ejections.Inc()
	}
	if dead {
		g.log.Warn("replica ejected until reported ready again: it refused a connection", "revision", rev.key.String(), "addr", ep.addr)
	} else {
		g.log.Warn("replica ejected after failures in a row", "revision", rev.key.String(), "addr", ep.addr, "failures", g.cfg.EjectAfter)
	}
}

// answer sets a gateway-made answer for a routed request and ends it.
func (g *Gateway) answer(ctx *fasthttp.RequestCtx, x *exchange, status int, msg string) {
	writeJSONError(ctx, status, msg)
	x.code = status
	g.finish(x)
}

// finish ends a routed request's accounting and returns the exchange to
// its pool. It runs on the handler's goroutine, or on the server's after
// the handler returned when the body was streamed.
func (g *Gateway) finish(x *exchange) {
	x.finishUpstream(false)
	if x.ep != nil {
		x.ep.release()
		x.ep = nil
	}
	rev := x.rev
	now := g.clock.Now()
	rev.stats.end(g.micros(now))
	end := now
	if !x.answered.IsZero() {
		end = x.answered
	}
	rev.outcomes.record(end.Sub(x.start), x.code >= 500 || x.failed)
	if m := rev.m; m != nil {
		m.inflight.Dec()
		m.code(x.code).Inc()
		m.duration.Observe(now.Sub(x.start).Seconds())
		if x.coldFirst && x.coldMs >= 0 {
			m.coldStart.Observe(now.Sub(x.start).Seconds())
		}
	}
	if x.coldFirst {
		rev.coldStart.Store(false)
	}
	if l := g.alog; l != nil && l.wants(x.code) {
		r := &x.log
		r.start, r.duration, r.status, r.rev = x.start, now.Sub(x.start), x.code, rev
		r.coldMs, r.retries, r.replica = x.coldMs, x.retries, x.replica
		l.record(r)
	}
	releaseExchange(x)
}

// rejectUnrouted answers a request that reached no revision.
func (g *Gateway) rejectUnrouted(ctx *fasthttp.RequestCtx, status int, msg string) {
	writeJSONError(ctx, status, msg)
	if g.metrics != nil {
		g.metrics.unrouted.WithLabelValues(statusLabel(status)).Inc()
	}
	if l := g.alog; l != nil && l.wants(status) {
		var r accessRecord
		r.capture(ctx.Method(), ctx.Host(), ctx.URI().PathOriginal(), traceID(ctx.Request.Header.PeekBytes(strTraceparent)))
		r.start = g.requestStart(ctx)
		r.duration, r.status, r.coldMs = g.clock.Since(r.start), status, -1
		if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
			r.client = ip
		}
		l.record(&r)
	}
}

// waited accounts for a request that waited in its revision's queue: the
// wait, and, when it waited for a revision's first replica (a cold start)
// and got one, how long, for Surge-Cold-Start.
func (g *Gateway) waited(x *exchange, served bool) {
	wait := g.clock.Since(x.start)
	if x.rev.m != nil {
		x.rev.m.queueWait.Observe(wait.Seconds())
	}
	if x.cold && served {
		x.coldMs = wait.Milliseconds()
	}
}

func (g *Gateway) health(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	if g.draining.Load() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("draining\n")
		return
	}
	ctx.SetBodyString("ok\n")
}

// writeJSONError sets {"error": msg} as the answer. msg is one of the
// constant messages above, so it needs no escaping.
func writeJSONError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	ctx.Response.ResetBody()
	w := ctx.Response.BodyWriter()
	_, _ = io.WriteString(w, `{"error":"`)
	_, _ = io.WriteString(w, msg)
	_, _ = io.WriteString(w, "\"}\n")
}

func statusLabel(code int) string {
	switch code {
	case 400:
		return "400"
	case 404:
		return "404"
	case 413:
		return "413"
	case 431:
		return "431"
	case 503:
		return "503"
	}
	return "other"
}
