package gateway

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

var headerSeeds = []string{
	"Host: a\r\n",
	"Host: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n",
	"Host: a\r\nConnection: keep-alive\r\nConnection: X-A , X-B\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n",
	"Host: a\r\nTransfer-Encoding: chunked\r\nTe: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n",
	"Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",
	"Host: a\r\nX-Folded: a\r\n b\r\n",
	"Host: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nConnection: X-Forwarded-For\r\n",
	"Host: a\r\nProxy-Authorization: Basic x\r\nProxy-Connection: keep-alive\r\nExpect: 100-continue\r\n",
	"Host: a\r\nCookie: a=b\r\nCookie: c=d\r\nConnection: Cookie\r\n",
	"Host: a\r\nConnection: Host, Content-Type, User-Agent\r\nContent-Type: x\r\nUser-Agent: y\r\n",
}

// FuzzForwardRequestHeader feeds arbitrary header blocks through the
// gateway's request header handling: checkFraming must not panic, and a
// header fasthttp accepts must come out without hop-by-hop headers or the
// headers its Connection names, with the gateway's X-Forwarded-For, and
// parseable again by a strict reader.
func FuzzForwardRequestHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(s)
	}
	ip := netip.MustParseAddr("192.0.2.7")
	f.Fuzz(func(t *testing.T, block string) {
		raw := "GET /x HTTP/1.1\r\n" + block + "\r\n"
		var src fasthttp.RequestHeader
		if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return
		}
		if checkFraming(src.RawHeaders()) != nil {
			return // the gateway answers 400 and forwards nothing
		}
		var named [][]byte
		for _, v := range src.PeekAll("Connection") {
			forEachToken(v, func(tok []byte) { named = append(named, append([]byte(nil), tok...)) })
		}
		// The raw path, when it applies, forwards the same.
		if wire, ok := appendRawRequestHead(nil, &src, []byte("/y"), forwardInfo{clientIP: ip}); ok {
			var fast fasthttp.RequestHeader
			if err := fast.Read(bufio.NewReader(bytes.NewReader(wire))); err != nil {
				t.Fatalf("raw forwarded header does not parse: %v\n%q", err, wire)
			}
			if err := checkFraming(fast.RawHeaders()); err != nil {
				t.Fatalf("raw forwarded header fails the framing check: %v\n%q", err, wire)
			}
			checkForwarded(t, &fast, named)
			if got := string(fast.Peek("X-Forwarded-For")); got != "192.0.2.7" {
				t.Fatalf("raw path: X-Forwarded-For = %q", got)
			}
			if got, want := string(fast.Host()), string(src.Host()); got != want {
				t.Fatalf("raw path: Host = %q, want %q", got, want)
			}
			if got := string(fast.RequestURI()); got != "/y" {
				t.Fatalf("raw path: request URI = %q", got)
			}
		}

		var dst fasthttp.RequestHeader
		copyRequestHeader(&dst, &src, []byte("/y"), forwardInfo{clientIP: ip}, nil)
		checkForwarded(t, &dst, named)

		// What goes on the wire parses again, and says the same.
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := dst.Write(w); err != nil {
			t.Fatalf("write forwarded header: %v", err)
		}
		w.Flush()
		var again fasthttp.RequestHeader
		if err := again.Read(bufio.NewReader(&buf)); err != nil {
			t.Fatalf("forwarded header does not parse: %v\n%q", err, buf.String())
		}
		if err := checkFraming(again.RawHeaders()); err != nil {
			t.Fatalf("forwarded header fails the framing check: %v\n%q", err, buf.String())
		}
		checkForwarded(t, &again, named)
		if got := string(again.Peek("X-Forwarded-For")); got != "192.0.2.7" {
			t.Fatalf("X-Forwarded-For = %q", got)
		}
	})
}

func checkForwarded(t *testing.T, h *fasthttp.RequestHeader, named [][]byte) {
	t.Helper()
	for _, k := range append(hopHeaders, "Expect") {
		if v := h.PeekAll(k); len(v) > 0 {
			t.Fatalf("hop-by-hop %s = %q forwarded", k, v)
		}
	}
	for _, k := range named {
		ks := string(k)
		switch strings.ToLower(ks) {
		case "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "content-length":
			continue // set by the gateway (or framing) after the removal
		}
		if v := h.PeekAll(ks); len(v) > 0 {
			t.Fatalf("%s named by Connection is forwarded: %q", ks, v)
		}
	}
}

// FuzzForwardResponseHeader does the same for a replica's answer.
func FuzzForwardResponseHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(strings.ReplaceAll(s, "Host: a\r\n", "Content-Type: text/plain\r\n"))
	}
	f.Fuzz(func(t *testing.T, block string) {
		raw := "HTTP/1.1 200 OK\r\n" + block + "\r\n"
		var src fasthttp.ResponseHeader
		if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return
		}
		var named []string
		for _, v := range src.PeekAll("Connection") {
			forEachToken(v, func(tok []byte) { named = append(named, string(tok)) })
		}
		var dst fasthttp.ResponseHeader
		copyResponseHeader(&dst, &src)
		for _, k := range hopHeaders {
			if k == "Transfer-Encoding" {
				continue // framing: fasthttp writes its own from the body
			}
			if v := dst.PeekAll(k); len(v) > 0 {
				t.Fatalf("hop-by-hop %s = %q forwarded", k, v)
			}
		}
		for _, k := range named {
			switch strings.ToLower(k) {
			case "content-length", "content-type", "transfer-encoding", "date", "server":
				continue // framing and fasthttp's own fields
			}
			if v := dst.PeekAll(k); len(v) > 0 {
				t.Fatalf("%s named by Connection is forwarded: %q", k, v)
			}
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := dst.Write(w); err != nil {
			t.Fatalf("write: %v", err)
		}
	})
}

// TestRepeatedForwardedFieldsAreReplacedWhole: a client that repeats
// X-Forwarded-* fields must not get one of its own values past the
// gateway, which replaces the fields rather than only their first line.
func TestRepeatedForwardedFieldsAreReplacedWhole(t *testing.T) {
	raw := "GET /x HTTP/1.1\r\nHost: a\r\n" +
		"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Host: evil\r\nX-Forwarded-Host: evil\r\n\r\n"
	var src fasthttp.RequestHeader
	if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		trust             bool
		xff, proto, xhost string
	}{
		{false, "192.0.2.7", "http", "a"},
		{true, "1.1.1.1, 2.2.2.2, 192.0.2.7", "https", "evil"},
	} {
		var dst fasthttp.RequestHeader
		copyRequestHeader(&dst, &src, []byte("/y"), forwardInfo{clientIP: netip.MustParseAddr("192.0.2.7"), trust: tt.trust}, nil)
		got := func(k string) string {
			var vs []string
			for _, v := range dst.PeekAll(k) {
				vs = append(vs, string(v))
			}
			return strings.Join(vs, " | ")
		}
		if got("X-Forwarded-For") != tt.xff {
			t.Errorf("trust %v: X-Forwarded-For %q, want %q", tt.trust, got("X-Forwarded-For"), tt.xff)
		}
		if !tt.trust && (got("X-Forwarded-Proto") != tt.proto || got("X-Forwarded-Host") != tt.xhost) {
			t.Errorf("trust %v: X-Forwarded-Proto %q, -Host %q, want %q, %q", tt.trust, got("X-Forwarded-Proto"), got("X-Forwarded-Host"), tt.proto, tt.xhost)
		}
	}
}
