package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/gateway"
	"github.com/surgeplatform/surge/internal/clock"
)

// GatewayTLSOptions are the HTTPS flags of `surge gateway` and `surge up`.
type GatewayTLSOptions struct {
	// Addr is where HTTPS is served: `surge gateway` serves it when given
	// certificates, `surge up` always ("" turns it off).
	Addr string
	// CertFile and KeyFile are the default certificate; Dir holds more,
	// chosen by SNI.
	CertFile, KeyFile, Dir string
	// Redirect sends every plain HTTP request to HTTPS, at RedirectPort
	// (0: Addr's).
	Redirect     bool
	RedirectPort int
	// issuer, set by `surge up`, signs the certificates no file covers.
	issuer gateway.CertIssuer
}

// defaultTLSAddr is where HTTPS is served unless --tls-addr says otherwise.
const defaultTLSAddr = ":8443"

func addGatewayTLSFlags(c *cobra.Command, o *GatewayTLSOptions, up bool) {
	f := c.Flags()
	addrUsage := "where the gateway serves HTTPS, when given --tls-cert or --tls-dir"
	if up {
		addrUsage = `where the gateway serves HTTPS, with certificates from the gateway CA (DATA_DIR/pki/gateway-ca.crt); "" for none`
	}
	f.StringVar(&o.Addr, "tls-addr", defaultTLSAddr, addrUsage)
	f.StringVar(&o.CertFile, "tls-cert", "", "PEM certificate (its chain after it) the gateway serves HTTPS with, for names no other certificate matches; reloaded when it changes")
	f.StringVar(&o.KeyFile, "tls-key", "", "PEM key of --tls-cert")
	f.StringVar(&o.Dir, "tls-dir", "", "directory of NAME.crt and NAME.key pairs, each served for the names its certificate lists (wildcards too), chosen by SNI; reloaded when they change")
	f.BoolVar(&o.Redirect, "https-redirect", false, "answer every plain HTTP request (but the health check) with a redirect to HTTPS")
	f.IntVar(&o.RedirectPort, "https-redirect-port", 0, "the HTTPS port redirects name (default: --tls-addr's; set it behind a load balancer on another port)")
}

// apply sets the HTTPS part of a gateway's options from the flags.
func (o *GatewayTLSOptions) apply(opts *gateway.Options) error {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return cli.Usagef("--tls-cert and --tls-key go together: give both, or neither")
	}
	if o.CertFile != "" || o.Dir != "" || o.issuer != nil {
		if o.Addr == "" {
			return cli.Usagef("--tls-addr is empty, and --tls-cert or --tls-dir asks for HTTPS: say where to serve it, e.g. --tls-addr %s", defaultTLSAddr)
		}
		opts.Config.TLSAddr = o.Addr
	}
	opts.Config.TLSCertFile, opts.Config.TLSKeyFile, opts.Config.TLSDir = o.CertFile, o.KeyFile, o.Dir
	opts.Config.HTTPSRedirect, opts.Config.HTTPSRedirectPort = o.Redirect, o.RedirectPort
	opts.CertIssuer = o.issuer
	return nil
}

// gatewayIssuer is `surge up`'s gateway.CertIssuer: the gateway CA signs
// *.DOMAIN (with localhost and the loopback addresses, where surge up's
// gateway is reached by path, /fn/NAME/) and *.NAMESPACE.DOMAIN, each kept
// in dir and reused until it is due for renewal.
type gatewayIssuer struct {
	ca     *pki.GatewayCA
	dir    string
	domain string
	clock  clock.Clock
}

var _ gateway.CertIssuer = (*gatewayIssuer)(nil)

// newGatewayIssuer loads (or makes) the gateway CA of dataDir for domain.
func newGatewayIssuer(dataDir, domain string, clk clock.Clock) (*gatewayIssuer, error) {
	ca, err := pki.LoadOrCreateGatewayCA(filepath.Join(dataDir, "pki"), domain, clk.Now())
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, "gateway-tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway certificates: %w", err)
	}
	return &gatewayIssuer{ca: ca, dir: dir, domain: domain, clock: clk}, nil
}

// IssueCertificate implements gateway.CertIssuer.
func (g *gatewayIssuer) IssueCertificate(_ context.Context, namespace string) (*tls.Certificate, error) {
	hosts := []string{"*." + g.domain, "localhost", "127.0.0.1", "::1"}
	base := filepath.Join(g.dir, "_domain")
	if namespace != "" {
		// A namespace is a DNS label (api.ValidateName): a file name too.
		hosts = []string{"*." + namespace + "." + g.domain}
		base = filepath.Join(g.dir, namespace)
	}
	c, err := g.ca.LoadOrIssue(base, hosts, g.clock.Now())
	if err != nil {
		return nil, err
	}
	return &c, nil
}
