package gateway

import "bytes"

// hostKey returns the routing key in a Host header value: "name" for
// NAME.DOMAIN and "name.namespace" for NAME.NAMESPACE.DOMAIN, lowercased,
// port and trailing dot ignored. ok is false when the host is not under
// domain or has more labels. The key is built in scratch, which is
// returned grown; nothing is allocated once scratch is large enough.
func hostKey(host []byte, domain string, scratch []byte) (key, buf []byte, ok bool) {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[i:], ']') < 0 {
		host = host[:i]
	}
	host = bytes.TrimSuffix(host, []byte{'.'})
	scratch = append(scratch[:0], host...)
	for i, c := range scratch {
		if c >= 'A' && c <= 'Z' {
			scratch[i] = c + 'a' - 'A'
		}
	}
	n, d := len(scratch), len(domain)
	if n <= d+1 || scratch[n-d-1] != '.' || string(scratch[n-d:]) != domain {
		return nil, scratch, false
	}
	key = scratch[:n-d-1]
	if bytes.Count(key, []byte{'.'}) > 1 {
		return nil, scratch, false
	}
	return key, scratch, true
}

// pathPrefix is where path routing starts: /fn/NAME/rest.
const pathPrefix = "/fn/"

// pathKey splits a raw request path /fn/KEY/rest into the routing key and
// the path the replica sees ("/rest", or "/" for /fn/KEY). KEY is "name"
// (default namespace) or "name.namespace". ok is false for other paths.
func pathKey(path []byte) (key, rest []byte, ok bool) {
	if !bytes.HasPrefix(path, []byte(pathPrefix)) {
		return nil, nil, false
	}
	p := path[len(pathPrefix):]
	i := bytes.IndexByte(p, '/')
	if i < 0 {
		i = len(p)
	}
	key = p[:i]
	if len(key) == 0 {
		return nil, nil, false
	}
	rest = p[i:]
	if len(rest) == 0 {
		rest = slash
	}
	return key, rest, true
}

var slash = []byte{'/'}
