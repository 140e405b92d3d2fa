package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/internal/clock"
)

// The attacks of "Security II" (finding 5) on the gateway by its clients,
// each carried out over real TCP connections against a gateway on
// loopback, and refused.

// dialFrom connects to addr from the loopback address local (any of
// 127.0.0.0/8 is this machine's), as a client at that address would.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a hang fails rather than stalls the test
	return c
}

// readAnswer reads one answer from br, body whole.
func readAnswer(t *testing.T, br *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read answer's body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// closedAfter reports whether the gateway closed the connection after its
// answer: a read then ends (EOF, or a reset) rather than waiting.
func closedAfter(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return isClosedErr(err)
}

// TestPathRoutingOffGivesEachFunctionItsOrigin: with path routing, a page
// of one function (/fn/evil/) shares the gateway's origin with every
// other's (/fn/victim/), so a browser lets it read them. With
// PathRouting off, /fn/victim/ reaches no function on the gateway's own
// host, nor on evil's (where it is evil's own path), and victim answers
// at its own host only.
func TestPathRoutingOffGivesEachFunctionItsOrigin(t *testing.T) {
	var victimHits atomic.Int64
	victim := backend(t, func(w http.ResponseWriter, r *http.Request) {
		victimHits.Add(1)
		fmt.Fprint(w, "victim's secret")
	})
	evil := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "evil at "+r.URL.Path) })
	for _, tt := range []struct {
		name        string
		pathRouting bool
		// what GET /fn/victim/ gets on the gateway's own host
		wantCode int
		wantBody string
	}{
		{"on (DefaultConfig)", true, 200, "victim's secret"},
		{"off", false, 404, `{"error":"` + msgNoFunction + "\"}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.PathRouting = tt.pathRouting
			tg := startGateway(t, cfg, Deps{})
			tg.route("victim", "victim-00001", 0, 0, victim)
			tg.route("evil", "evil-00001", 0, 0, evil)
			victimHits.Store(0)

			c := dialFrom(t, "127.0.0.1", tg.addr)
			br := bufio.NewReader(c)
			get := func(host, path string) (int, string) {
				t.Helper()
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
				return readAnswer(t, br)
			}
			code, body := get(tg.addr, "/fn/victim/")
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("GET /fn/victim/ at the gateway's own host: %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if code, body := get("evil.surge.localhost", "/fn/victim/"); code != 200 || body != "evil at /fn/victim/" {
				t.Errorf("GET /fn/victim/ at evil's host: %d %q, want evil's own path", code, body)
			}
			if code, body := get("victim.surge.localhost", "/"); code != 200 || body != "victim's secret" {
				t.Errorf("victim at its own host: %d %q", code, body)
			}
			if want := int64(1); !tt.pathRouting && victimHits.Load() != want {
				t.Errorf("victim served %d requests, want %d (its own host's only)", victimHits.Load(), want)
			}
		})
	}
}

// TestPerIPCapHoldsAcrossParking: one address opens connections until
// the cap, lets them idle until they are parked — fasthttp then serves
// none of them, and its own per-IP count (which the gateway does not use)
// would have forgotten them — and opens one more: refused, 429. Parked
// connections are served again when they send, not refused as new ones;
// one that closes makes room; another address, and a trusted proxy's,
// are not held to the first one's count.
func TestPerIPCapHoldsAcrossParking(t *testing.T) {
	const limit = 3
	cfg := parkingConfig()
	cfg.MaxConnsPerIP = limit
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
	tg := startGateway(t, cfg, Deps{})
	tg.route("p", "p-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	attacker := netip.MustParseAddr("127.0.0.1")

	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	open := func(from string) client {
		t.Helper()
		c := dialFrom(t, from, tg.addr)
		cl := client{c, bufio.NewReader(c)}
		if code, body := rawGet(t, c, cl.br, "p.surge.localhost"); code != 200 || body != "ok" {
			t.Fatalf("connection from %s: %d %q, want 200", from, code, body)
		}
		return cl
	}
	refused := func(from string) {
		t.Helper()
		c := dialFrom(t, from, tg.addr)
		br := bufio.NewReader(c)
		// Nothing is sent: the answer comes as the connection is accepted.
		code, body := readAnswer(t, br)
		if code != http.StatusTooManyRequests || !strings.Contains(body, msgTooManyConns) || !closedAfter(br) {
			t.Errorf("a connection from %s past the cap: %d %q, want 429 and closed", from, code, body)
		}
	}

	var held []client
	for range limit {
		held = append(held, open("127.0.0.1"))
	}
	eventually(t, "the idle connections to be parked", func() bool { return tg.parkedCount() == limit })
	if n := tg.srv.GetOpenConnectionsCount(); n != 0 {
		t.Fatalf("fasthttp serves %d connections while all are parked", n)
	}
	if n := tg.ips.count(attacker); n != limit {
		t.Fatalf("%s counts %d connections while its %d are parked", attacker, n, limit)
	}
	refused("127.0.0.1")

	// Another address has its own count; a trusted proxy has none.
	open("127.0.0.2")
	for range limit + 1 {
		open("127.0.0.3")
	}
	if n := tg.ips.count(netip.MustParseAddr("127.0.0.3")); n != 0 {
		t.Errorf("the trusted proxy's connections are counted: %d", n)
	}

	// A parked connection that sends is served: it was never let go of.
	if code, _ := rawGet(t, held[0].c, held[0].br, "p.surge.localhost"); code != 200 {
		t.Errorf("a parked connection's next request: %d, want 200", code)
	}
	refused("127.0.0.1")

	// One that closes, parked, makes room for one more.
	held[1].c.Close()
	eventually(t, "the closed parked connection to be uncounted", func() bool { return tg.ips.count(attacker) == limit-1 })
	open("127.0.0.1")
	refused("127.0.0.1")
}

// TestPerIPCapKeys: an IPv6 client counts by its /64, which it can fill
// with addresses at will; an IPv4 one by its address.
func TestPerIPCapKeys(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"10.1.2.3", "10.1.2.3"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"},
	} {
		if got := capKey(netip.MustParseAddr(tt.a)); got != netip.MustParseAddr(tt.b) {
			t.Errorf("capKey(%s) = %s, want %s", tt.a, got, tt.b)
		}
	}
}

// TestTrustedNets: a trusted network holds its addresses, IPv4 ones as
// IPv6 sockets name them too.
func TestTrustedNets(t *testing.T) {
	nets := trustedNets{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for a, want := range map[string]bool{"10.9.9.9": true, "::ffff:10.9.9.9": true, "11.0.0.1": false, "2001:db8::5": true, "2001:db9::5": false} {
		if got := nets.contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("trusted %s = %v, want %v", a, got, want)
		}
	}
}

// TestSlowBodyCannotHoldAReplica: a body that streams to a replica holds
// the replica's slot (here its only one) while it comes. One that arrives
// within RequestBodyTimeout is proxied whole; one still arriving past it
// is cut: 408, the connection closed and the slot free for the next
// request.
func TestSlowBodyCannotHoldAReplica(t *testing.T) {
	const size = 1 << 20 // streamed: more than ReplayBodyBytes
	head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: slow.surge.localhost\r\nContent-Length: %d\r\n\r\n", size)
	body := strings.Repeat("b", size)

	t.Run("in time", func(t *testing.T) {
		got := make(chan struct{}, 1)
		tg := startGateway(t, testConfig(), Deps{Clock: newFakeClock()})
		tg.route("slow", "slow-00001", 1, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
			n, err := r.Body.Read(make([]byte, 1))
			if n == 1 && r.Method == http.MethodPost {
				got <- struct{}{}
			}
			rest, rerr := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, int64(n)+rest, err, rerr)
		}))
		rev := tg.Routes().Load().routes["slow"].targets[0].rev
		c := dialFrom(t, "127.0.0.1", tg.addr)
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, head+body[:size/2]); err != nil {
			t.Fatal(err)
		}
		<-got // the body streams: the replica's one slot is taken
		waited := make(chan int, 1)
		go func() { code, _ := send(httpClient, tg.addr, "GET", "slow.surge.localhost", nil); waited <- code }()
		eventually(t, "the next request to wait for the slot", func() bool { return rev.queue.length() == 1 })
		if _, err := io.WriteString(c, body[size/2:]); err != nil {
			t.Fatal(err)
		}
		if code, answer := readAnswer(t, br); code != 200 || answer != fmt.Sprint(size, nil, nil) {
			t.Errorf("a body in time: %d %q, want 200 and all %d bytes", code, answer, size)
		}
		if code := <-waited; code != 200 {
			t.Errorf("the request that waited for the slot: %d", code)
		}
	})

	t.Run("past RequestBodyTimeout", func(t *testing.T) {
		// The gateway's clock lags the wall clock by RequestBodyTimeout:
		// the deadline it sets when the request takes the slot, from its
		// clock, is due at once on the wall clock the socket keeps, as if
		// the client had dribbled the body for that long.
		cfg := testConfig()
		clk := clock.NewFake()
		clk.Advance(time.Since(clk.Now()) - cfg.RequestBodyTimeout)
		var served atomic.Int64
		tg := startGateway(t, cfg, Deps{Clock: clk})
		tg.route("slow", "slow-00001", 1, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err == nil {
				served.Add(1) // a whole request: not the cut one's remains
			}
			fmt.Fprint(w, "ok")
		}))
		c := dialFrom(t, "127.0.0.1", tg.addr)
		br := bufio.NewReader(c)
		// More than the 8 KiB fasthttp reads before it calls the handler
		// (a client stalling within those stalls under ReadTimeout, and
		// takes no slot).
		if _, err := io.WriteString(c, head+body[:16<<10]); err != nil {
			t.Fatal(err)
		}
		code, answer := readAnswer(t, br)
		if code != http.StatusRequestTimeout || !strings.Contains(answer, msgBodyTimeout) || !closedAfter(br) {
			t.Errorf("a body not come in time: %d %q, want 408 and closed", code, answer)
		}
		ep := tg.Routes().Load().routes["slow"].targets[0].rev.endpoints()[0]
		if n := ep.inflight.Load(); n != 0 {
			t.Errorf("the replica holds %d requests after the 408, want its slot free", n)
		}
		if code, _ := send(httpClient, tg.addr, "GET", "slow.surge.localhost", nil); code != 200 || served.Load() != 1 {
			t.Errorf("the next request: %d (the replica served %d), want 200 from the freed slot", code, served.Load())
		}
	})
}

// TestClientCannotForgeItsAddress: a client that names another address
// (Forwarded, X-Real-IP, X-Forwarded-For, in any case, repeated) or
// another scheme or host (X-Forwarded-Proto, -Host) is not believed: the
// function sees only what the gateway saw. A trusted proxy's word passes
// on, extended with the proxy's own address.
func TestClientCannotForgeItsAddress(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	tg := startGateway(t, cfg, Deps{})
	tg.route("hello", "hello-00001", 0, 0, backend(t, echoHandler))
	forged := "Forwarded: for=6.6.6.6;proto=https\r\nforwarded: for=7.7.7.7\r\n" +
		"X-Real-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.example\r\n"
	type seen struct{ Forwarded, RealIP, For, Proto, Host []string }
	for _, tt := range []struct {
		name, from, method string
		want               seen
	}{
		{"GET from a client", "127.0.0.1", "GET",
			seen{For: []string{"127.0.0.1"}, Proto: []string{"http"}, Host: []string{"hello.surge.localhost"}}},
		{"POST from a client", "127.0.0.1", "POST",
			seen{For: []string{"127.0.0.1"}, Proto: []string{"http"}, Host: []string{"hello.surge.localhost"}}},
		{"GET from a trusted proxy", "127.0.0.2", "GET", seen{
			Forwarded: []string{"for=6.6.6.6;proto=https", "for=7.7.7.7"}, RealIP: []string{"6.6.6.6", "7.7.7.7"},
			For: []string{"6.6.6.6, 127.0.0.2"}, Proto: []string{"https"}, Host: []string{"bank.example"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialFrom(t, tt.from, tg.addr)
			req := tt.method + " / HTTP/1.1\r\nHost: hello.surge.localhost\r\n" + forged
			if tt.method == "POST" {
				req += "Content-Length: 4\r\n\r\nbody"
			} else {
				req += "\r\n"
			}
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			code, body := readAnswer(t, bufio.NewReader(c))
			if code != 200 {
				t.Fatalf("%d %q", code, body)
			}
			h := decodeEcho(t, body).Header
			got := seen{Forwarded: h.Values("Forwarded"), RealIP: h.Values("X-Real-Ip"),
				For: h.Values("X-Forwarded-For"), Proto: h.Values("X-Forwarded-Proto"), Host: h.Values("X-Forwarded-Host")}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("headers the function saw (-want +got):\n%s", diff)
			}
		})
	}
}
