package gateway

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// Redirects to HTTPS: with Config.HTTPSRedirect, every plain HTTP
// request but the health check's; with a function's spec.httpsRedirect,
// that function's. The answer is 308 Permanent Redirect (RFC 9110
// §15.4.9) to the same host, path and query at the gateway's HTTPS port:
// unlike 301, a client repeats a POST as a POST, with its body.

var (
	msgNoHost   = "the request has no usable Host to redirect to over HTTPS"
	strLocation = []byte(fasthttp.HeaderLocation)
)

// secure reports whether the client reached the gateway over TLS: on
// its TLS listener, or through a proxy it trusts (TrustedProxies) that
// says X-Forwarded-Proto: https.
func (g *Gateway) secure(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsTLS() {
		return true
	}
	if !bytes.EqualFold(ctx.Request.Header.Peek("X-Forwarded-Proto"), strHTTPS) {
		return false
	}
	ip, ok := netip.AddrFromSlice(ctx.RemoteIP())
	return ok && g.trusted.contains(ip.Unmap())
}

// redirectHTTPS answers ctx with the redirect to its URL over HTTPS.
func (g *Gateway) redirectHTTPS(ctx *fasthttp.RequestCtx) {
	host := ctx.Request.Header.Host()
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[i:], ']') < 0 {
		host = host[:i]
	}
	if !validHost(host) {
		g.rejectUnrouted(ctx, fasthttp.StatusBadRequest, msgNoHost)
		return
	}
	var buf [256]byte
	loc := append(buf[:0], "https://"...)
	loc = append(loc, host...)
	loc = append(loc, g.httpsPort...)
	loc = append(loc, ctx.RequestURI()...)
	ctx.Response.Header.SetCanonical(strLocation, loc)
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	if g.metrics != nil {
		g.metrics.unrouted.WithLabelValues("308").Inc()
	}
}

// validHost reports whether h, a Host without its port, is a name or an
// address a URL may hold as it is: letters, digits, '-', '.', '_', or an
// IPv6 literal in brackets. Anything else (a '/', an '@', a space) could
// make the Location point elsewhere than the host asked for.
func validHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return false
		}
		for _, c := range h[1 : len(h)-1] {
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f') {
				return false
			}
		}
		return true
	}
	for _, c := range h {
		if !(c == '-' || c == '.' || c == '_' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}
