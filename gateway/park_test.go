package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// parkedCount is how many of tg's connections are parked now.
func (tg *testGateway) parkedCount() int {
	tg.park.mu.Lock()
	defer tg.park.mu.Unlock()
	return len(tg.park.parked)
}

// rawGet sends a GET on c and reads its answer from br.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader, host string) (int, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func parkingConfig() Config {
	cfg := testConfig()
	cfg.ParkIdleAfter = 20 * time.Millisecond
	return cfg
}

// TestIdleConnectionIsParkedAndServedAgain: a keep-alive connection that
// waits for its next request is parked — fasthttp lets go of it — and
// its next requests are answered on the same connection.
func TestIdleConnectionIsParkedAndServedAgain(t *testing.T) {
	tg := startGateway(t, parkingConfig(), Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for round := range 3 {
		if code, body := rawGet(t, c, br, "p.surge.localhost"); code != 200 || body != "ok" {
			t.Fatalf("round %d: %d %q", round, code, body)
		}
		eventually(t, "the idle connection to be parked", func() bool { return tg.parkedCount() == 1 })
		if n := tg.srv.GetOpenConnectionsCount(); n != 0 {
			t.Errorf("round %d: fasthttp serves %d connections while the only one is parked", round, n)
		}
	}
	if p, w := tg.park.parks.Load(), tg.park.wakes.Load(); p != 3 || w != 2 {
		t.Errorf("%d parks and %d wakes, want 3 and 2", p, w)
	}
	// Busy, it is not: a request right after another is served as usual.
	for range 50 {
		if code, _ := rawGet(t, c, br, "p.surge.localhost"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
}

// TestParkedConnectionClosedAfterIdleTimeout: a parked connection is
// still closed when its idle timeout passes.
func TestParkedConnectionClosedAfterIdleTimeout(t *testing.T) {
	cfg := parkingConfig()
	cfg.IdleTimeout = 300 * time.Millisecond
	tg := startGateway(t, cfg, Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	rawGet(t, c, br, "p.surge.localhost")
	eventually(t, "the idle connection to be parked", func() bool { return tg.parkedCount() == 1 })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("read on a connection idle past its timeout: %v, want EOF", err)
	}
	eventually(t, "the closed connection to leave the registry", func() bool {
		tg.park.mu.Lock()
		defer tg.park.mu.Unlock()
		return len(tg.park.conns) == 0 && len(tg.park.parked) == 0
	})
}

// TestDrainClosesParkedConnections: the drain closes parked connections
// as fasthttp closes idle ones, and Run returns.
func TestDrainClosesParkedConnections(t *testing.T) {
	tg := startGateway(t, parkingConfig(), Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rawGet(t, c, bufio.NewReader(c), "p.surge.localhost")
		conns = append(conns, c)
	}
	eventually(t, "the idle connections to be parked", func() bool { return tg.parkedCount() == 5 })
	tg.cancel()
	if err := tg.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("parked connection %d after the drain: %d bytes, %v; want EOF", i, n, err)
		}
	}
}

// TestUnreadBodyIsNotParkedMidway: a request answered before its body
// came whole (an unrouted POST) leaves the rest of the body to fasthttp,
// which reads it after the answer; the connection is not parked while it
// waits for it, so the body is not taken for the next request.
func TestUnreadBodyIsNotParkedMidway(t *testing.T) {
	tg := startGateway(t, parkingConfig(), Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	const size = 100 << 10 // more than fasthttp reads before the handler
	// The body looks like requests for no function: taken for requests,
	// it would be answered 404s before the GET that follows it.
	head := "GET / HTTP/1.1\r\nHost: nobody.surge.localhost\r\n\r\n"
	body := strings.Repeat(head, size/len(head)+1)[:size]
	if _, err := fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: nobody.surge.localhost\r\nContent-Length: %d\r\n\r\n%s", size, body[:size/2]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unrouted POST: %d", resp.StatusCode)
	}
	// Several sweeps pass while the rest of the body has not come.
	deadline := time.Now().Add(10 * time.Second)
	for gen := tg.park.sweeps(); tg.park.sweeps() < gen+3; {
		if time.Now().After(deadline) {
			t.Fatal("no sweeps")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := tg.parkedCount(); n != 0 {
		t.Fatalf("%d connections parked while a body was coming", n)
	}
	if _, err := io.WriteString(c, body[size/2:]); err != nil {
		t.Fatal(err)
	}
	if code, body := rawGet(t, c, br, "p.surge.localhost"); code != 200 || body != "ok" {
		t.Errorf("the request after the unread body: %d %q; want 200: was the body taken for requests?", code, body)
	}
}

// TestMaxConnsCountsParkedConnections: MaxConns bounds the open client
// connections, parked ones among them; one more is closed as it comes.
func TestMaxConnsCountsParkedConnections(t *testing.T) {
	cfg := parkingConfig()
	cfg.MaxConns = 2
	tg := startGateway(t, cfg, Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	for range 2 {
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rawGet(t, c, bufio.NewReader(c), "p.surge.localhost")
	}
	eventually(t, "both connections to be parked", func() bool { return tg.parkedCount() == 2 })
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: p.surge.localhost\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !strings.Contains(err.Error(), "reset")) {
		t.Errorf("a third connection beyond MaxConns 2: read %q, %v; want it closed", b, err)
	}
}
