// Package client is the Go client of Surge's API, used by the CLI, node
// agents and gateways. Errors from the server come back as *api.Error and
// match the api sentinels with errors.Is.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/surgeplatform/surge/api"
)

// Client talks to the API servers of one cluster: it sends each request
// to the server that answered last, and moves on to the next when that one
// is unreachable (see send). It is safe for concurrent use.
type Client struct {
	// servers are the API's base URLs, without a final slash; cur indexes
	// the one in use, shared by the copies WithToken makes.
	servers   []string
	cur       *atomic.Int32
	token     string
	namespace string
	http      *http.Client
	// conns are the connections it made, when it authenticates with a
	// client certificate (NewWithCertificate); nil otherwise.
	conns *connSet
}

// New returns a client for a config.
func New(cfg *Config) (*Client, error) { return newClient(cfg, nil) }

// newClient returns a client for a config, with its transport completed
// by tune (nil leaves it).
func newClient(cfg *Config, tune func(*http.Transport)) (*Client, error) {
	servers := cfg.Endpoints()
	if len(servers) == 0 {
		return nil, fmt.Errorf("server %q is not an API URL like https://127.0.0.1:7070", cfg.Server)
	}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("server %q is not an API URL like https://127.0.0.1:7070", s)
		}
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CertificateAuthority != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(cfg.CertificateAuthority)) {
			return nil, errors.New("certificateAuthority: no PEM certificate found")
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = 32
	// A server whose machine is gone does not refuse a connection: the
	// dial waits, and with several servers the next one should be tried
	// within seconds, not after the default 30s.
	tr.DialContext = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	// The API speaks HTTP/2, which multiplexes every request of a client
	// (heartbeats, watches, status writes) on one connection. A connection
	// whose peer vanished (a cut link, a partition) would hold them all
	// until TCP gives up, minutes later, and after the link heals TCP's
	// back-off delays the first retransmission by up to half a minute. A
	// ping after ConnIdlePing of silence, answered within ConnPingTimeout,
	// finds it dead in seconds; the next request dials anew.
	tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: ConnIdlePing, PingTimeout: ConnPingTimeout}
	if tune != nil {
		tune(tr)
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = api.DefaultNamespace
	}
	for i := range servers {
		servers[i] = strings.TrimRight(servers[i], "/")
	}
	return &Client{
		servers:   servers,
		cur:       new(atomic.Int32),
		token:     cfg.Token,
		namespace: ns,
		http:      &http.Client{Transport: tr},
	}, nil
}

// ConnIdlePing and ConnPingTimeout bound how long a dead connection to
// the API goes unnoticed: a ping after ConnIdlePing without a frame, and
// the connection closed when its answer takes ConnPingTimeout. Shorter
// finds a dead peer sooner, for a ping a few seconds on an idle client.
const (
	ConnIdlePing    = 3 * time.Second
	ConnPingTimeout = 2 * time.Second
)

// DialTimeout bounds a connection's set-up to a server: past it the
// server counts as unreachable, and the next one is tried. A LAN answers
// in milliseconds; 5s leaves room for a loaded server.
const DialTimeout = 5 * time.Second

// Transport is the client's HTTP transport, which trusts the config's CA:
// other protocols on the API listener (the OCI registry at /v2/) use it.
func (c *Client) Transport() http.RoundTripper { return c.http.Transport }

// Token is the bearer token the client sends.
func (c *Client) Token() string { return c.token }

// Namespace is the client's default namespace.
func (c *Client) Namespace() string { return c.namespace }

// Server is the base URL of the API server in use: the one that answered
// last (at first, the config's first).
func (c *Client) Server() string { return c.servers[c.cur.Load()] }

// Servers are every API server's base URL, in the config's order.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// ErrUnreachable wraps transport errors: the server did not answer.
var ErrUnreachable = errors.New("API server unreachable")

// Do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard). A non-2xx answer is an *api.Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send performs a request and turns a non-2xx answer into an *api.Error.
// With several servers it fails over: a request that could not reach its
// server, and an idempotent one whose connection broke or that the server
// answered 503 (its etcd member cut off from the quorum), goes to the next
// server, which is then the one in use. A POST is sent again only when its
// connection was never made, so that a create is never done twice.
func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	start := int(c.cur.Load())
	var lastErr error
	for i := range len(c.servers) {
		idx := (start + i) % len(c.servers)
		req, err := c.newRequest(ctx, c.servers[idx], method, path, b, body != nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.http.Do(req)
		last := i == len(c.servers)-1
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			lastErr = fmt.Errorf("%w at %s: %w", ErrUnreachable, c.servers[idx], err)
			if last || !(idempotent(method) || neverConnected(err)) {
				return nil, lastErr
			}
			continue
		case resp.StatusCode == http.StatusServiceUnavailable && idempotent(method) && !last:
			lastErr = readError(resp)
			resp.Body.Close()
			continue
		}
		if idx != start {
			c.cur.CompareAndSwap(int32(start), int32(idx))
		}
		if resp.StatusCode >= 300 {
			defer resp.Body.Close()
			return nil, readError(resp)
		}
		return resp, nil
	}
	return nil, lastErr
}

// newRequest makes one request to the server at base.
func (c *Client) newRequest(ctx context.Context, base, method, path string, body []byte, hasBody bool) (*http.Request, error) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// idempotent reports whether sending a request twice does what sending it
// once does (RFC 9110, 9.2.2): PUT replaces, DELETE of a deleted object
// is a 404.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// neverConnected reports whether err happened before a connection was
// made, so that the server cannot have seen the request.
func neverConnected(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		e.Code = resp.StatusCode
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &api.Error{Code: resp.StatusCode, Reason: http.StatusText(resp.StatusCode), Message: msg}
}

// PathOf returns the API path of the object of kind k that key names,
// /v1/namespaces/NS/PLURAL/NAME, or of the kind's collection in
// key.Namespace when key.Name is empty; an empty namespace is every
// namespace (/v1/PLURAL). Kinds without a namespace ignore key.Namespace.
// A subresource is a suffix: PathOf(k, key)+"/status".
func PathOf(k api.Kind, key api.Key) string {
	p := "/v1/"
	if k.Namespaced && key.Namespace != "" {
		p += "namespaces/" + url.PathEscape(key.Namespace) + "/"
	}
	p += k.Plural
	if key.Name != "" {
		p += "/" + url.PathEscape(key.Name)
	}
	return p
}

// ObjectPath returns the API path of the object of type T that key names
// (see PathOf), e.g. ObjectPath[api.Scale](key)+"/activate".
func ObjectPath[T any, P api.ObjectPtr[T]](key api.Key) string {
	return PathOf(api.KindOf[T, P](), key)
}

// CollectionPath returns the API path of the collection of type T in a
// namespace; "" is every namespace.
func CollectionPath[T any, P api.ObjectPtr[T]](namespace string) string {
	return PathOf(api.KindOf[T, P](), api.Key{Namespace: namespace})
}

// Get reads the object of type T that key names.
func Get[T any, P api.ObjectPtr[T]](ctx context.Context, c *Client, key api.Key) (*T, error) {
	var out T
	if err := c.Do(ctx, http.MethodGet, ObjectPath[T, P](key), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// List reads the objects of type T in a namespace ("" for every
// namespace); query holds filters such as function=NAME.
func List[T any, P api.ObjectPtr[T]](ctx context.Context, c *Client, ns string, query url.Values) (*api.List[T], error) {
	p := CollectionPath[T, P](ns)
	if len(query) > 0 {
		p += "?" + query.Encode()
	}
	var out api.List[T]
	if err := c.Do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutFunction creates or replaces a function (`surge deploy`).
func (c *Client) PutFunction(ctx context.Context, f *api.Function) (*api.Function, error) {
	ns := f.Metadata.Namespace
	if ns == "" {
		ns = c.namespace
	}
	var out api.Function
	if err := c.Do(ctx, http.MethodPut, PathOf(api.FunctionKind, api.Key{Namespace: ns, Name: f.Metadata.Name}), f, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete removes the object of type T that key names.
func Delete[T any, P api.ObjectPtr[T]](ctx context.Context, c *Client, key api.Key) error {
	return c.Do(ctx, http.MethodDelete, ObjectPath[T, P](key), nil, nil)
}

// WatchOptions steer Watch.
type WatchOptions struct {
	// ResourceVersion to resume from; "" starts from now.
	ResourceVersion string
	// Query holds filters such as function=NAME.
	Query url.Values
	// RetryDelay is the first wait before reconnecting after the stream
	// breaks; it doubles up to MaxRetryDelay.
	RetryDelay, MaxRetryDelay time.Duration
}

// Watch streams changes of the objects of type T in a namespace ("" for
// every namespace) to fn, reconnecting from the last seen
// resourceVersion whenever the stream breaks (a server restart, a network
// blip), on the next server when there are several (see send), so no
// change is lost or seen twice. It returns when ctx ends, when
// fn returns an error, or with api.ErrGone when the server no longer has
// the history to resume: the caller then lists again and watches from the
// list's version.
func Watch[T any, P api.ObjectPtr[T]](ctx context.Context, c *Client, ns string, opts WatchOptions, fn func(api.WatchEvent[*T]) error) error {
	rv := opts.ResourceVersion
	delay := cmpOr(opts.RetryDelay, 100*time.Millisecond)
	maxDelay := cmpOr(opts.MaxRetryDelay, 5*time.Second)
	wait := delay
	for {
		q := url.Values{}
		for k, v := range opts.Query {
			q[k] = v
		}
		q.Set("watch", "true")
		if rv != "" {
			q.Set("resourceVersion", rv)
		}
		resp, err := c.send(ctx, http.MethodGet, CollectionPath[T, P](ns)+"?"+q.Encode(), nil)
		if err == nil {
			wait = delay
			err = readEvents(resp.Body, func(e api.WatchEvent[*T]) error {
				if e.ResourceVersion != "" {
					rv = e.ResourceVersion
				}
				if e.Type == api.EventBookmark {
					return nil
				}
				return fn(e)
			})
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code != http.StatusServiceUnavailable {
			return err // 410, 401, 403, 404: reconnecting will not help
		}
		var fnErr *handlerError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, maxDelay)
	}
}

// handlerError marks an error returned by Watch's callback.
type handlerError struct{ err error }

func (h *handlerError) Error() string { return h.err.Error() }

func readEvents[T any](body io.Reader, fn func(api.WatchEvent[*T]) error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		var e api.WatchEvent[*T]
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("decode watch event: %w", err)
		}
		if e.Type == api.EventError {
			if e.Error != nil {
				return e.Error
			}
			return errors.New("watch ended with an error")
		}
		if err := fn(e); err != nil {
			return &handlerError{err}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// WithToken returns a client like c that sends another token; it shares
// c's connections.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.token = token
	return &cc
}

// Open sends a GET for path, a path of the API such as a replica's log,
// and returns the streaming answer; a non-2xx answer is an *api.Error. It
// goes to the API's origin only: the client's token never leaves it.
func (c *Client) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("open %q: want a path of the API, like /v1/...", path)
	}
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
