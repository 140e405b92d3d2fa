package gateway

import (
	"bytes"
	"errors"
	"iter"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
)

// hopHeaders are meaningful for one connection only (RFC 9110 §7.6.1) and
// are never forwarded, in either direction. Expect is added: the gateway
// answers 100-continue itself before it reads the body.
var hopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// Errors of request framing the gateway rejects with 400 and a closed
// connection, because a peer that parses them differently could be fooled
// into seeing another request in the body (request smuggling, RFC 9112 §11.2).
var (
	errContentLengthAndChunked = errors.New("gateway: both Content-Length and Transfer-Encoding")
	errObsFold                 = errors.New("gateway: obsolete line folding in header")
	errDuplicateContentLength  = errors.New("gateway: more than one Content-Length")
	errBadHeaderName           = errors.New("gateway: invalid header field name")
	errBadHeaderValue          = errors.New("gateway: control character in header field value")
)

// checkFraming scans a request's raw header block (as read off the wire)
// for what fasthttp accepts but a proxy must not forward: Content-Length
// together with Transfer-Encoding, a repeated Content-Length, obsolete line
// folding, field names that are not tokens, and control characters in
// field values. It allocates nothing.
func checkFraming(raw []byte) error {
	cl, te := 0, 0
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		var line []byte
		if i < 0 {
			line, raw = raw, nil
		} else {
			line, raw = raw[:i], raw[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadHeaderName
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return errBadHeaderName
			}
		}
		for _, c := range line[colon+1:] {
			if c < ' ' && c != '\t' || c == 0x7f {
				return errBadHeaderValue
			}
		}
		switch {
		case asciiEqualFold(name, "content-length"):
			cl++
		case asciiEqualFold(name, "transfer-encoding"):
			te++
		}
	}
	if cl > 1 {
		return errDuplicateContentLength
	}
	if cl > 0 && te > 0 {
		return errContentLengthAndChunked
	}
	return nil
}

// isTokenChar reports whether c may appear in a field name (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// forEachToken calls fn with each comma-separated token of v, trimmed of
// optional whitespace.
func forEachToken(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			fn(tok)
		}
	}
}

// forwardInfo is what the gateway adds to a forwarded request.
type forwardInfo struct {
	clientIP netip.Addr
	tls      bool
	// trust: the client is a trusted proxy (Config.TrustedProxies), whose
	// Forwarded and X-Real-IP pass on and whose X-Forwarded-* headers are
	// kept and extended. Anyone else's are removed or replaced.
	trust bool
	// traceparent, when set, is a trace the gateway started for a request
	// that came without one (W3C Trace Context), sent on to the replica.
	traceparent []byte
}

// fieldSet is a set of the header fields the gateway treats specially, so
// that copying a header costs a deletion only for the fields a message has:
// fasthttp's Del normalises its key and scans the header on every call,
// and most messages carry none of these fields.
type fieldSet uint32

// The fields of a fieldSet: hopHeaders[i] is 1<<i, then these.
const (
	fieldExpect fieldSet = 1 << (16 + iota)
	fieldXForwardedFor
	fieldXForwardedProto
	fieldXForwardedHost
	fieldForwarded
	fieldXRealIP
	fieldConnection = 1 // hopHeaders[0]
)

var specialFields = []struct {
	name string // lowercase
	bit  fieldSet
}{
	{"expect", fieldExpect},
	{"x-forwarded-for", fieldXForwardedFor},
	{"x-forwarded-proto", fieldXForwardedProto},
	{"x-forwarded-host", fieldXForwardedHost},
	{"forwarded", fieldForwarded},
	{"x-real-ip", fieldXRealIP},
}

// Canonical names the gateway sets, for SetCanonical, which skips
// normalising the key.
var (
	strXForwardedFor   = []byte("X-Forwarded-For")
	strXForwardedProto = []byte("X-Forwarded-Proto")
	strXForwardedHost  = []byte("X-Forwarded-Host")
	strHTTP            = []byte("http")
	strHTTPS           = []byte("https")
)

// fieldOf returns name's bit, or 0 for a field the gateway passes as is.
func fieldOf(name []byte) fieldSet {
	for i, h := range hopHeaders {
		if len(name) == len(h) && asciiEqualFold(name, lowerHopHeaders[i]) {
			return 1 << i
		}
	}
	for _, f := range specialFields {
		if len(name) == len(f.name) && asciiEqualFold(name, f.name) {
			return f.bit
		}
	}
	return 0
}

var lowerHopHeaders = func() []string {
	l := make([]string, len(hopHeaders))
	for i, h := range hopHeaders {
		l[i] = strings.ToLower(h)
	}
	return l
}()

// presentFields returns the special fields among a header's, as its All
// iterator yields them (the parsed header, not its raw bytes, so that no
// field fasthttp keeps apart is missed).
func presentFields(all iter.Seq2[[]byte, []byte]) fieldSet {
	var s fieldSet
	for k := range all {
		s |= fieldOf(k)
	}
	return s
}

// headerDeleter is a request or a response header.
type headerDeleter interface {
	Del(key string)
	DelBytes(key []byte)
}

var (
	_ headerDeleter = (*fasthttp.RequestHeader)(nil)
	_ headerDeleter = (*fasthttp.ResponseHeader)(nil)
)

// deleteHopHeaders deletes from dst the hop-by-hop fields of present, and
// the fields that src's Connection names (but not the framing ones).
func deleteHopHeaders(dst headerDeleter, connection [][]byte, present fieldSet) {
	if present&fieldConnection != 0 {
		for _, v := range connection {
			forEachToken(v, func(tok []byte) {
				if !isFramingField(tok) {
					dst.DelBytes(tok)
				}
			})
		}
	}
	for i, h := range hopHeaders {
		if present&(1<<i) != 0 {
			dst.Del(h)
		}
	}
}

// copyRequestHeader fills dst (an outgoing request header) from src (the
// client's), without hop-by-hop headers or the headers that src's
// Connection names, with X-Forwarded-For/-Proto/-Host set, without
// Forwarded and X-Real-IP unless the client is trusted, and with the
// request URI replaced by uri. scratch is a buffer to reuse; the grown
// buffer is returned. The caller sets the body and its framing.
func copyRequestHeader(dst, src *fasthttp.RequestHeader, uri []byte, fw forwardInfo, scratch []byte) []byte {
	present := presentFields(src.All())
	src.CopyTo(dst)
	var connection [][]byte
	if present&fieldConnection != 0 {
		connection = src.PeekAll("Connection")
	}
	deleteHopHeaders(dst, connection, present)
	if present&fieldExpect != 0 {
		dst.Del("Expect")
	}
	dst.ResetConnectionClose()
	dst.SetRequestURIBytes(uri)
	// Forwarded (RFC 7239) and X-Real-IP name the client to a function
	// just as X-Forwarded-For does: only a trusted proxy's are believed.
	// The gateway sets neither itself; X-Forwarded-For is its word.
	if !fw.trust {
		if present&fieldForwarded != 0 {
			dst.Del("Forwarded")
		}
		if present&fieldXRealIP != 0 {
			dst.Del("X-Real-IP")
		}
	}

	// X-Forwarded-For: the client's chain (when trusted), then its address.
	// A field the client sent is deleted whole before it is set: Set
	// replaces only the first of repeated fields, and a second one would
	// pass a forged address on.
	scratch = scratch[:0]
	if present&fieldXForwardedFor != 0 {
		if fw.trust {
			for _, v := range src.PeekAll("X-Forwarded-For") {
				if len(scratch) > 0 {
					scratch = append(scratch, ", "...)
				}
				scratch = append(scratch, v...)
			}
		}
		dst.Del("X-Forwarded-For")
	}
	if fw.clientIP.IsValid() {
		if len(scratch) > 0 {
			scratch = append(scratch, ", "...)
		}
		scratch = fw.clientIP.Unmap().AppendTo(scratch)
	}
	if len(scratch) > 0 {
		dst.SetCanonical(strXForwardedFor, scratch)
	}
	if !fw.trust || len(src.Peek("X-Forwarded-Proto")) == 0 {
		if present&fieldXForwardedProto != 0 {
			dst.Del("X-Forwarded-Proto")
		}
		if fw.tls {
			dst.SetCanonical(strXForwardedProto, strHTTPS)
		} else {
			dst.SetCanonical(strXForwardedProto, strHTTP)
		}
	}
	if !fw.trust || len(src.Peek("X-Forwarded-Host")) == 0 {
		if present&fieldXForwardedHost != 0 {
			dst.Del("X-Forwarded-Host")
		}
		if host := src.Host(); len(host) > 0 {
			dst.SetCanonical(strXForwardedHost, host)
		}
	}
	if len(fw.traceparent) > 0 {
		dst.SetCanonical(strTraceparent, fw.traceparent)
	}
	return scratch
}

// copyResponseHeader fills dst (the answer to the client) from src (the
// replica's), without hop-by-hop headers or the headers src's Connection
// names. The caller sets the body and its framing.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader) {
	present := presentFields(src.All())
	src.CopyTo(dst)
	var connection [][]byte
	if present&fieldConnection != 0 {
		connection = src.PeekAll("Connection")
	}
	deleteHopHeaders(dst, connection, present)
	dst.ResetConnectionClose()
}

// isFramingField reports the fields a Connection option may not remove:
// without them the message cannot be delivered or delimited (a client
// sending "Connection: Host" would otherwise strip the replica's Host).
func isFramingField(name []byte) bool {
	return asciiEqualFold(name, "host") || asciiEqualFold(name, "content-length")
}

// appendRawRequestHead appends to dst the header of the request to the
// replica, made from the client's header block as it came off the wire,
// when that block may go on as it is: it holds no field the gateway
// removes or sets (hop-by-hop, Expect, X-Forwarded-*, Forwarded,
// X-Real-IP), every line ends in
// CRLF, and Host comes once at most. Then the request line is rebuilt with
// uri, the X-Forwarded-For/-Proto/-Host lines are added, and it reports
// true; this saves copying the parsed header field by field and writing
// it out again (copyRequestHeader), which is most of the gateway's own
// work on a small request. Otherwise it reports false and dst is
// unchanged. The caller has run checkFraming on the block, and sends no
// body.
func appendRawRequestHead(dst []byte, src *fasthttp.RequestHeader, uri []byte, fw forwardInfo) ([]byte, bool) {
	block, ok := forwardableBlock(src.RawHeaders())
	if !ok {
		return dst, false
	}
	dst = append(dst, src.Method()...)
	dst = append(dst, ' ')
	dst = append(dst, uri...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	dst = append(dst, block...)
	if fw.clientIP.IsValid() {
		dst = append(dst, "X-Forwarded-For: "...)
		dst = fw.clientIP.Unmap().AppendTo(dst)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "X-Forwarded-Proto: "...)
	if fw.tls {
		dst = append(dst, strHTTPS...)
	} else {
		dst = append(dst, strHTTP...)
	}
	dst = append(dst, "\r\n"...)
	if host := src.Host(); len(host) > 0 {
		dst = append(dst, "X-Forwarded-Host: "...)
		dst = append(dst, host...)
		dst = append(dst, "\r\n"...)
	}
	if len(fw.traceparent) > 0 {
		dst = append(dst, "traceparent: "...)
		dst = append(dst, fw.traceparent...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...), true
}

// forwardableBlock returns raw's field lines, without the empty line that
// ends them, if appendRawRequestHead may send them as they are.
func forwardableBlock(raw []byte) ([]byte, bool) {
	end, hosts := 0, 0
	for rest := raw; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 1 || rest[i-1] != '\r' {
			return nil, false // a bare LF, or an unterminated line
		}
		line := rest[:i-1]
		rest = rest[i+1:]
		if len(line) == 0 {
			continue
		}
		end = len(raw) - len(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false
		}
		name := line[:colon]
		if fieldOf(name) != 0 {
			return nil, false
		}
		if asciiEqualFold(name, "host") {
			if hosts++; hosts > 1 {
				return nil, false
			}
		}
	}
	return raw[:end], end > 0
}
