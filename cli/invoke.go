package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// InvokeOptions are the inputs of `surge invoke`.
type InvokeOptions struct {
	Streams
	NewClient clientFunc
	// HTTP sends the request; nil is a client that reaches NAME.localhost
	// hosts on loopback (RFC 6761) and follows no redirect.
	HTTP *http.Client
	// ReadFile reads -d @FILE; nil is os.ReadFile.
	ReadFile func(string) ([]byte, error)
	Now      func() time.Time

	Name     string
	Method   string
	Data     string
	Headers  []string
	Path     string
	Revision string
	// Gateway overrides the function's URL's scheme and host, for a
	// gateway the server does not know of.
	Gateway string
	Verbose bool
}

func newInvokeCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &InvokeOptions{Streams: s, NewClient: newClient, Now: d.now, HTTP: d.http, ReadFile: d.readFile}
	c := &cobra.Command{
		Use:   "invoke NAME [-X METHOD] [-d DATA|@FILE] [-H K:V]... [--path P] [-v]",
		Short: "Send a request to a function through the gateway and print its answer",
		Long: `Invoke sends one HTTP request to the function NAME at its URL (the gateway's,
as the server reports it; --gateway overrides it) and prints the answer's body.
With -v it also prints the request, the status and the answer's headers on
stderr. An answer of 400 or more exits 1.`,
		Example: `  surge invoke hello
  surge invoke echo -X POST -d '{"a":1}' -H Content-Type:application/json
  surge invoke echo -d @request.json --path /things -v
  surge invoke hello --revision hello-00002`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runInvoke(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.Method, "request", "X", "", "HTTP method (default GET, or POST with -d)")
	f.StringVarP(&o.Data, "data", "d", "", "request body; @FILE reads it from FILE, @- from stdin")
	f.StringArrayVarP(&o.Headers, "header", "H", nil, "request header K:V (repeatable)")
	f.StringVar(&o.Path, "path", "/", "path (and query) of the request")
	f.StringVar(&o.Revision, "revision", "", "send the request to this revision, whatever its share of the traffic: one that takes traffic or carries a tag (surge tag)")
	f.StringVar(&o.Gateway, "gateway", "", "the gateway's URL, e.g. http://surge.example.com:8080, instead of the server's")
	f.BoolVarP(&o.Verbose, "verbose", "v", false, "print the request, the status and the answer's headers on stderr")
	_ = c.RegisterFlagCompletionFunc("revision", completeRevisions(newClient))
	return c
}

func runInvoke(ctx context.Context, o *InvokeOptions) error {
	if err := api.ValidateName(o.Name); err != nil {
		return fmt.Errorf("function %q: name %s", o.Name, api.NameRule)
	}
	if !strings.HasPrefix(o.Path, "/") {
		return usagef("--path %q: want a path starting with /", o.Path)
	}
	hdr := http.Header{}
	for _, h := range o.Headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return usagef("-H %q: want NAME:VALUE", h)
		}
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	body, err := o.body()
	if err != nil {
		return err
	}
	method := strings.ToUpper(o.Method)
	if method == "" {
		method = http.MethodGet
		if body != nil {
			method = http.MethodPost
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	fn, err := client.Get[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: o.Name})
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	base, err := functionURL(fn, o.Gateway)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+o.Path, body)
	if err != nil {
		return usagef("request %s %s: %v", method, base+o.Path, err)
	}
	req.Header = hdr
	if o.Revision != "" {
		req.Header.Set("Surge-Revision", o.Revision)
	}
	req.Header.Set("User-Agent", "surge-invoke")
	if o.Verbose {
		// The gateway then says which replica of which revision
		// answered (Surge-Served-By, Surge-Revision).
		req.Header.Set("Surge-Debug", "1")
		fmt.Fprintf(o.Err, "> %s %s\n", method, req.URL)
		printHeaders(o.Err, "> ", req.Header)
	}
	hc := o.HTTP
	if hc == nil {
		hc = localhostClient()
	}
	start := o.Now()
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("function %q: no answer from its gateway at %s (%v): is the gateway running? (--gateway URL names another)", o.Name, req.URL.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if o.Verbose {
		fmt.Fprintf(o.Err, "< %s %s (%s)\n", resp.Proto, resp.Status, roundDuration(o.Now().Sub(start)))
		printHeaders(o.Err, "< ", resp.Header)
	}
	if _, err := io.Copy(o.Out, resp.Body); err != nil {
		return fmt.Errorf("function %q: read the answer: %w", o.Name, err)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("function %q answered %s", o.Name, resp.Status)
	}
	return nil
}

// body is the request body -d gives: the text, @FILE's content, or @-'s
// stdin; nil without -d.
func (o *InvokeOptions) body() (io.Reader, error) {
	switch {
	case o.Data == "":
		return nil, nil
	case o.Data == "@-":
		return o.In, nil
	case strings.HasPrefix(o.Data, "@"):
		read := o.ReadFile
		if read == nil {
			read = os.ReadFile
		}
		b, err := read(o.Data[1:])
		if err != nil {
			return nil, usagef("-d %s: %v", o.Data, err)
		}
		return strings.NewReader(string(b)), nil
	}
	return strings.NewReader(o.Data), nil
}

// functionURL is where to send a function's requests: its URL, with the
// scheme and host of gateway when one is given.
func functionURL(fn *api.Function, gateway string) (string, error) {
	u := fn.Status.URL
	if gateway != "" {
		g, err := url.Parse(gateway)
		if err != nil || (g.Scheme != "http" && g.Scheme != "https") || g.Host == "" {
			return "", usagef("--gateway %q: want the gateway's URL, like http://surge.example.com:8080", gateway)
		}
		// NAME.HOST, as the gateway routes; the namespace too outside the
		// default one.
		host := fn.Metadata.Name + "."
		if ns := fn.Metadata.Namespace; ns != "" && ns != api.DefaultNamespace {
			host += ns + "."
		}
		return g.Scheme + "://" + host + g.Host, nil
	}
	if u == "" {
		return "", fmt.Errorf("function %q has no URL: the server does not know its gateway (start it with --gateway-url), or pass --gateway URL", fn.Metadata.Name)
	}
	return strings.TrimRight(u, "/"), nil
}

// localhostClient sends requests for NAME.localhost and its subdomains to
// loopback, as RFC 6761 says every resolver should (curl does; Go's and
// some systems' resolvers do not), and everything else as usual. It
// follows no redirect: invoke shows what the function answered.
func localhostClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func printHeaders(w io.Writer, prefix string, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(w, "%s%s: %s\n", prefix, k, v)
		}
	}
}

// unwrapURLError drops the method and URL *url.Error repeats.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
