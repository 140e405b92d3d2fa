package gateway

import (
	"bytes"
	"errors"
	"net/netip"

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
	trust    bool // keep and extend the client's X-Forwarded-* headers
}

// copyRequestHeader fills dst (an outgoing request header) from src (the
// client's), without hop-by-hop headers or the headers that src's
// Connection names, with X-Forwarded-For/-Proto/-Host set, and with the
// request URI replaced by uri. scratch is a buffer to reuse; the grown
// buffer is returned. The caller sets the body and its framing.
func copyRequestHeader(dst, src *fasthttp.RequestHeader, uri []byte, fw forwardInfo, scratch []byte) []byte {
	src.CopyTo(dst)
	for _, v := range src.PeekAll("Connection") {
		forEachToken(v, func(tok []byte) {
			if !isFramingField(tok) {
				dst.DelBytes(tok)
			}
		})
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	dst.Del("Expect")
	dst.ResetConnectionClose()
	dst.SetRequestURIBytes(uri)

	// X-Forwarded-For: the client's chain (when trusted), then its address.
	scratch = scratch[:0]
	if fw.trust {
		for _, v := range src.PeekAll("X-Forwarded-For") {
			if len(scratch) > 0 {
				scratch = append(scratch, ", "...)
			}
			scratch = append(scratch, v...)
		}
	}
	if fw.clientIP.IsValid() {
		if len(scratch) > 0 {
			scratch = append(scratch, ", "...)
		}
		scratch = fw.clientIP.Unmap().AppendTo(scratch)
	}
	if len(scratch) > 0 {
		dst.SetBytesV("X-Forwarded-For", scratch)
	} else {
		dst.Del("X-Forwarded-For")
	}
	if !fw.trust || len(src.Peek("X-Forwarded-Proto")) == 0 {
		if fw.tls {
			dst.Set("X-Forwarded-Proto", "https")
		} else {
			dst.Set("X-Forwarded-Proto", "http")
		}
	}
	if !fw.trust || len(src.Peek("X-Forwarded-Host")) == 0 {
		if host := src.Host(); len(host) > 0 {
			dst.SetBytesV("X-Forwarded-Host", host)
		} else {
			dst.Del("X-Forwarded-Host")
		}
	}
	return scratch
}

// copyResponseHeader fills dst (the answer to the client) from src (the
// replica's), without hop-by-hop headers or the headers src's Connection
// names. The caller sets the body and its framing.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader) {
	src.CopyTo(dst)
	for _, v := range src.PeekAll("Connection") {
		forEachToken(v, func(tok []byte) {
			if !isFramingField(tok) {
				dst.DelBytes(tok)
			}
		})
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	dst.ResetConnectionClose()
}

// isFramingField reports the fields a Connection option may not remove:
// without them the message cannot be delivered or delimited (a client
// sending "Connection: Host" would otherwise strip the replica's Host).
func isFramingField(name []byte) bool {
	return asciiEqualFold(name, "host") || asciiEqualFold(name, "content-length")
}
