package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/surgeplatform/surge/api"
)

func TestIsWebSocketUpgrade(t *testing.T) {
	tests := []struct {
		name, req string
		want      bool
	}{
		{"websocket", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", true},
		{"case and lists", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: h2c, WebSocket\r\n", true},
		{"plain", "GET / HTTP/1.1\r\nHost: a\r\n", false},
		{"no connection upgrade", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n", false},
		{"h2c", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n", false},
		{"post", "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n", false},
		{"body", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n", false},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			if err := h.Read(bufio.NewReader(strings.NewReader(tt.req + "\r\n"))); err != nil {
				t.Fatal(err)
			}
			if got := isWebSocketUpgrade(&h); got != tt.want {
				t.Errorf("isWebSocketUpgrade = %v, want %v", got, tt.want)
			}
		})
	}
}

// wsBackend is a WebSocket echo replica. Each connection's server side is
// sent on conns, the handshake's request header on headers, and the error
// that ended a connection's echo loop on ended.
type wsBackend struct {
	addr    string
	conns   chan *websocket.Conn
	headers chan http.Header
	ended   chan error
}

func startWSBackend(t *testing.T) *wsBackend {
	t.Helper()
	b := &wsBackend{conns: make(chan *websocket.Conn, 10), headers: make(chan http.Header, 10), ended: make(chan error, 10)}
	up := websocket.Upgrader{}
	b.addr = backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			http.Error(w, "no websockets here", http.StatusForbidden)
			return
		}
		b.headers <- r.Header.Clone()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.conns <- c
		for {
			mt, p, err := c.ReadMessage()
			if err == nil {
				err = c.WriteMessage(mt, p)
			}
			if err != nil {
				c.Close()
				b.ended <- err
				return
			}
		}
	})
	return b
}

// dialWS opens a WebSocket to fn through the gateway.
func (tg *testGateway) dialWS(t *testing.T, fn, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+tg.addr+path, http.Header{"Host": {fn + ".surge.localhost"}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s through the gateway: %v (status %d)", fn, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// inflight is the requests in flight on fn's first replica.
func (tg *testGateway) inflight(fn string) int64 {
	fr := tg.Routes().Load().lookup([]byte(fn))
	if fr == nil || len(fr.targets) == 0 {
		return -1
	}
	eps := fr.targets[0].rev.endpoints()
	if len(eps) == 0 {
		return -1
	}
	return eps[0].InFlight()
}

// route sets fn with one revision with the given limits.
func (tg *testGateway) routeLimits(fn string, timeout, idle time.Duration, addr string) {
	tg.Routes().Update(func(s *State) {
		ns, rev := api.DefaultNamespace, fn+"-00001"
		s.SetFunction(FunctionInfo{Namespace: ns, Name: fn, DefaultRevision: rev})
		s.SetRevision(RevisionInfo{Namespace: ns, Name: rev, Function: fn, Number: 1, Timeout: timeout, IdleTimeout: idle})
		s.SetEndpoint(EndpointInfo{Namespace: ns, Replica: rev + "-a", Function: fn, Revision: rev, Node: "n1", Addr: addr, Phase: api.ReplicaReady})
	})
}

// readErr waits up to 10 seconds for c's next read to fail, and returns
// the error and how long it took.
func readErr(t *testing.T, c *websocket.Conn) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(10 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after %v", time.Since(start))
			}
			return err, time.Since(start)
		}
	}
}

func TestWebSocketEchoesThroughGateway(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	c := tg.dialWS(t, "ws", "/chat?room=1")

	h := <-b.headers
	if got := h.Get("Upgrade"); got != "websocket" {
		t.Errorf("replica saw Upgrade %q", got)
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("replica saw X-Forwarded-For %q", got)
	}
	if h.Get("Sec-Websocket-Key") == "" {
		t.Errorf("Sec-WebSocket-Key not forwarded: %v", h)
	}

	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, bytes.Repeat([]byte{0, 1, 2, 0xff}, 64<<10)}, // larger than every buffer
		{websocket.TextMessage, []byte("")},
	}
	for i, m := range msgs {
		if err := c.WriteMessage(m.typ, m.data); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		typ, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Errorf("message %d: echoed type %d, %d bytes; want type %d, %d bytes", i, typ, len(got), m.typ, len(m.data))
		}
	}
	if n := tg.inflight("ws"); n != 1 {
		t.Errorf("in flight with the socket open: %d, want 1", n)
	}
	if got := testutil.ToFloat64(tg.metrics.inflight.WithLabelValues("default", "ws", "ws-00001")); got != 1 {
		t.Errorf("in-flight gauge %v, want 1", got)
	}
}

func TestWebSocketClientCloseClosesReplica(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	c := tg.dialWS(t, "ws", "/")
	<-b.conns

	// An abrupt close, with no close frame: the replica must see its end.
	c.UnderlyingConn().Close()
	select {
	case err := <-b.ended:
		if !isClosedErr(err) && !websocket.IsUnexpectedCloseError(err) {
			t.Errorf("replica's read ended with %v, want the connection closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replica's connection stayed open after the client closed")
	}
	eventually(t, "the tunnel to end", func() bool { return tg.inflight("ws") == 0 && tg.tunnels.len() == 0 })
	if got := testutil.ToFloat64(tg.metrics.requests.WithLabelValues("default", "ws", "ws-00001", "1xx")); got != 1 {
		t.Errorf("requests{101} = %v, want 1", got)
	}
}

func TestWebSocketReplicaCloseClosesClient(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	c := tg.dialWS(t, "ws", "/")
	server := <-b.conns

	// A clean close: the close frame passes through, then the connection ends.
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye")
	if err := server.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	server.Close()
	err, _ := readErr(t, c)
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("client read %v, want the replica's close frame", err)
	}
	// Then the gateway's side of the client connection is closed too.
	c.UnderlyingConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.UnderlyingConn().Read(make([]byte, 1)); !isClosedErr(err) {
		t.Errorf("client connection after the replica closed: %v, want closed", err)
	}
	eventually(t, "the tunnel to end", func() bool { return tg.inflight("ws") == 0 })
}

func TestWebSocketIdleAndTotalLimits(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})

	t.Run("idle", func(t *testing.T) {
		const idle = 300 * time.Millisecond
		tg.routeLimits("idle", time.Minute, idle, startWSBackend(t).addr)
		c := tg.dialWS(t, "idle", "/")
		err, took := readErr(t, c)
		if !isClosedErr(err) && !websocket.IsUnexpectedCloseError(err) {
			t.Errorf("read %v, want the connection closed", err)
		}
		if took < idle-50*time.Millisecond {
			t.Errorf("closed after %v, before the idle timeout %v", took, idle)
		}
		eventually(t, "the tunnel to end", func() bool { return tg.inflight("idle") == 0 })
	})

	t.Run("one busy direction keeps it open", func(t *testing.T) {
		const idle = 300 * time.Millisecond
		b := startWSBackend(t)
		tg.routeLimits("busy", time.Minute, idle, b.addr)
		c := tg.dialWS(t, "busy", "/")
		server := <-b.conns
		// Only the replica talks, for four idle timeouts.
		for i := range 16 {
			if err := server.WriteMessage(websocket.TextMessage, []byte("tick")); err != nil {
				t.Fatalf("replica write %d: %v", i, err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			time.Sleep(idle / 4) // the cadence under test, not a wait for a condition
		}
	})

	t.Run("total", func(t *testing.T) {
		const total = 500 * time.Millisecond
		tg.routeLimits("total", total, time.Minute, startWSBackend(t).addr)
		start := time.Now()
		c := tg.dialWS(t, "total", "/")
		var err error
		for err == nil && time.Since(start) < 10*time.Second {
			if err = c.WriteMessage(websocket.TextMessage, []byte("x")); err == nil {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err = c.ReadMessage()
			}
		}
		if took := time.Since(start); err == nil || took < total-50*time.Millisecond {
			t.Errorf("busy socket ended after %v with %v, want closed at the %v limit", took, err, total)
		}
	})
}

func TestWebSocketRejectedByReplicaPassesAnswerOn(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	_, resp, err := d.Dial("ws://"+tg.addr+"/reject", http.Header{"Host": {"ws.surge.localhost"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial: %v, %v; want 403", err, resp)
	}
	eventually(t, "the request to end", func() bool { return tg.inflight("ws") == 0 })
}

// rawUpgradeBackend answers every request 101 and, in the same write,
// sends "early"; then echoes what it reads.
func rawUpgradeBackend(t *testing.T, upgrade string) string {
	return backend(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+upgrade+"\r\nConnection: Upgrade\r\n\r\nearly")
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, brw.Reader)
	})
}

func TestUpgradeKeepsBytesSentWithTheHandshake(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("raw", "raw-00001", 0, 0, rawUpgradeBackend(t, "websocket"))
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The client's first bytes follow its handshake in the same write.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: raw.surge.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
	got := make([]byte, len("earlyping"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "earlyping" {
		t.Fatalf("read %q, %v; want earlyping", got, err)
	}
}

func TestUpgradeOnlyWhenAskedAndOnlyToWebSocket(t *testing.T) {
	tg := startGateway(t, testConfig(), Deps{})
	tg.route("raw", "raw-00001", 0, 0, rawUpgradeBackend(t, "websocket"))
	tg.route("h2c", "h2c-00001", 0, 0, rawUpgradeBackend(t, "h2c"))
	tests := []struct {
		name, req string
	}{
		{"101 to a plain request", "GET / HTTP/1.1\r\nHost: raw.surge.localhost\r\n\r\n"},
		{"101 to h2c when websocket was asked", "GET / HTTP/1.1\r\nHost: h2c.surge.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"h2c asked", "GET / HTTP/1.1\r\nHost: raw.surge.localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, closed := rawExchange(t, tg.addr, tt.req)
			if status != http.StatusBadGateway || !closed {
				t.Errorf("status %d, connection closed %v; want 502 and closed", status, closed)
			}
		})
	}
}

func TestUpgradeOpenAtDrainIsClosedAfterDrainTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Deps{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tg := &testGateway{Gateway: g, addr: ln.Addr().String()}
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	c := tg.dialWS(t, "ws", "/")
	if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}

	cancel()
	if err, took := readErr(t, c); took < cfg.DrainTimeout-50*time.Millisecond {
		t.Errorf("socket closed %v into the drain (%v), before DrainTimeout", took, err)
	}
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "deadline") {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := g.tunnels.len(); n != 0 {
		t.Errorf("%d tunnels left after Run", n)
	}
}

func TestUpgradeAnsweredDuringShutdownDoesNotLeak(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Deps{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tg := &testGateway{Gateway: g, addr: ln.Addr().String()}

	// The replica holds the handshake until the gateway is shutting down,
	// when fasthttp writes the 101 but does not hand the connection over:
	// the tunnel that never ran must still end, by DrainTimeout.
	entered, release := make(chan struct{}), make(chan struct{})
	held := backend(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, brw.Reader)
	})
	tg.route("ws", "ws-00001", 0, 0, held)
	client := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			client <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: ws.surge.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		_, err = io.Copy(io.Discard, c) // until the gateway closes it
		client <- err
	}()
	<-entered
	cancel()
	eventually(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", tg.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	select {
	case err := <-client:
		if err != nil {
			t.Errorf("client: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client's connection stayed open")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := tg.inflight("ws"); n != 0 {
		t.Errorf("%d requests in flight after Run returned", n)
	}
	if n := g.tunnels.len(); n != 0 {
		t.Errorf("%d tunnels left after Run", n)
	}
}

func TestWebSocketsAreCappedByMaxConns(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConns = 1
	tg := startGateway(t, cfg, Deps{})
	b := startWSBackend(t)
	tg.route("ws", "ws-00001", 0, 0, b.addr)
	first := tg.dialWS(t, "ws", "/")
	// fasthttp counts the first connection until its worker has handed it
	// over; a dial before that meets fasthttp's own limit, not the tunnel
	// cap under test.
	eventually(t, "fasthttp to hand the first socket over", func() bool { return tg.srv.GetCurrentConcurrency() == 0 })

	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	_, resp, err := d.Dial("ws://"+tg.addr+"/", http.Header{"Host": {"ws.surge.localhost"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second socket: %v, %v; want 503 with Retry-After", err, resp)
	}

	first.Close()
	eventually(t, "the first tunnel to end", func() bool { return tg.tunnels.len() == 0 })
	tg.dialWS(t, "ws", "/")
}
