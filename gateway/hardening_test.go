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

// rawExchange writes raw bytes to the gateway and reads one response, then
// reports whether the gateway closed the connection after it.
func rawExchange(t *testing.T, addr, raw string) (status int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// A closed connection reads EOF (or reset) at once; an open one times out.
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	return resp.StatusCode, err != nil && !isTimeout(err)
}

// The corpus below is what a proxy must not pass on ambiguously (request
// smuggling, RFC 9112 §6.3 and §11.2) or must bound. "fasthttp" says which
// cases fasthttp rejects by itself; the others are the gateway's own checks
// (checkFraming, the body limit on chunked bodies, and failBody).
func TestHardeningCorpus(t *testing.T) {
	cfg := testConfig()
	cfg.MaxHeaderBytes = 4096
	cfg.MaxRequestBodyBytes = 1000
	cfg.ReplayBodyBytes = 100
	tg := startGateway(t, cfg, Deps{})
	tg.route("h", "h-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "ok")
	}))
	const host = "Host: h.surge.localhost\r\n"
	tests := []struct {
		name      string
		raw       string
		status    int
		wantClose bool
		by        string
	}{
		{"good GET", "GET / HTTP/1.1\r\n" + host + "\r\n", 200, false, ""},
		{"good chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, false, ""},
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, true, "gateway"},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, true, "gateway"},
		{"duplicate CL, same value", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, true, "fasthttp"},
		{"duplicate CL, different", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, true, "fasthttp"},
		{"CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3, 3\r\n\r\nabc", 400, true, "fasthttp"},
		{"CL with sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +3\r\n\r\nabc", 400, true, "fasthttp"},
		{"obsolete line folding", "GET / HTTP/1.1\r\n" + host + "X-Folded: a\r\n b\r\n\r\n", 400, true, "gateway"},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X-Bad : a\r\n\r\n", 400, true, "fasthttp"},
		{"space in field name", "GET / HTTP/1.1\r\n" + host + "X Bad: a\r\n\r\n", 400, true, "gateway"},
		{"bad field name", "GET / HTTP/1.1\r\n" + host + "X@Bad: a\r\n\r\n", 400, true, "gateway"},
		{"control character in value", "GET / HTTP/1.1\r\n" + host + "X-Bad: a\x01b\r\n\r\n", 400, true, "gateway"},
		{"two Host headers", "GET / HTTP/1.1\r\n" + host + host + "\r\n", 400, true, "fasthttp"},
		{"TE gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, true, "fasthttp"},
		{"two TE headers", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, true, "fasthttp"},
		{"TE on HTTP/1.0", "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, true, "fasthttp"},
		{"bad chunk size", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, true, "gateway (failBody)"},
		{"chunk without CRLF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", 400, true, "gateway (failBody)"},
		{"header too large", "GET / HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431, true, "fasthttp"},
		{"body over limit, CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1001\r\n\r\n" + strings.Repeat("a", 1001), 413, true, "gateway"},
		{"body over limit, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3e9\r\n" + strings.Repeat("a", 1001) + "\r\n0\r\n\r\n", 413, true, "gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, closed := rawExchange(t, tg.addr, tt.raw)
			if status != tt.status || closed != tt.wantClose {
				t.Errorf("got %d closed=%v, want %d closed=%v (rejected by %s)", status, closed, tt.status, tt.wantClose, tt.by)
			}
		})
	}
}

func TestPerIPConnectionCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerIP = 1
	tg := startGateway(t, cfg, Deps{})
	tg.route("h", "h-00001", 0, 0, backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	first, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	io.WriteString(first, "GET / HTTP/1.1\r\nHost: h.surge.localhost\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first connection: %v %v", resp, err)
	}
	status, closed := rawExchange(t, tg.addr, "GET / HTTP/1.1\r\nHost: h.surge.localhost\r\n\r\n")
	if status != http.StatusTooManyRequests || !closed {
		t.Errorf("second connection from the same IP: %d closed=%v, want 429 and closed", status, closed)
	}
}
