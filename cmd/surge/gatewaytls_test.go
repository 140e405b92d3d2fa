package main

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/gateway"
	"github.com/surgeplatform/surge/internal/clock"
)

// TestGatewayTLSFlags: HTTPS is served at --tls-addr when there are
// certificates (files, or surge up's issuer), and the flags that go
// together say so.
func TestGatewayTLSFlags(t *testing.T) {
	iss := &gatewayIssuer{}
	for _, tc := range []struct {
		name    string
		o       GatewayTLSOptions
		want    gateway.Config
		issuer  bool
		wantErr string
	}{
		{name: "none: HTTP only", o: GatewayTLSOptions{Addr: ":8443"}},
		{name: "a pair", o: GatewayTLSOptions{Addr: ":8443", CertFile: "c.pem", KeyFile: "k.pem"},
			want: gateway.Config{TLSAddr: ":8443", TLSCertFile: "c.pem", TLSKeyFile: "k.pem"}},
		{name: "a directory, redirects", o: GatewayTLSOptions{Addr: ":443", Dir: "certs", Redirect: true, RedirectPort: 443},
			want: gateway.Config{TLSAddr: ":443", TLSDir: "certs", HTTPSRedirect: true, HTTPSRedirectPort: 443}},
		{name: "surge up's issuer", o: GatewayTLSOptions{Addr: ":8443", issuer: iss}, want: gateway.Config{TLSAddr: ":8443"}, issuer: true},
		{name: "cert without key", o: GatewayTLSOptions{Addr: ":8443", CertFile: "c.pem"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "no address", o: GatewayTLSOptions{Dir: "certs"}, wantErr: "--tls-addr is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts gateway.Options
			err := tc.o.apply(&opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("apply: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, opts.Config); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			if (opts.CertIssuer != nil) != tc.issuer {
				t.Errorf("issuer %v, want %v", opts.CertIssuer, tc.issuer)
			}
		})
	}
}

// TestGatewayIssuer: surge up's issuer signs, with the gateway CA of the
// data dir, the domain's certificate (loopback too) and each namespace's,
// keeps them in DATA_DIR/gateway-tls, and hands the same one back until it
// is due for renewal.
func TestGatewayIssuer(t *testing.T) {
	data := t.TempDir()
	clk := clock.NewFake()
	iss, err := newGatewayIssuer(data, "surge.localhost", clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dom, err := iss.IssueCertificate(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	team, err := iss.IssueCertificate(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert  *x509.Certificate
		names []string
	}{
		{dom.Leaf, []string{"hello.surge.localhost", "localhost", "127.0.0.1", "::1"}},
		{team.Leaf, []string{"api.team.surge.localhost"}},
	} {
		for _, n := range tc.names {
			if _, err := tc.cert.Verify(x509.VerifyOptions{Roots: iss.ca.Pool(), DNSName: n, CurrentTime: clk.Now()}); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		}
	}
	if _, err := team.Leaf.Verify(x509.VerifyOptions{Roots: iss.ca.Pool(), DNSName: "api.other.surge.localhost", CurrentTime: clk.Now()}); err == nil {
		t.Errorf("team's certificate verified for another namespace")
	}
	again, err := iss.IssueCertificate(ctx, "team")
	if err != nil || again.Leaf.SerialNumber.Cmp(team.Leaf.SerialNumber) != 0 {
		t.Errorf("asked again: %v; want the same certificate, from %s", err, filepath.Join(data, "gateway-tls"))
	}
	// Another issuer on the same data dir: the same CA, the kept files.
	iss2, err := newGatewayIssuer(data, "surge.localhost", clk)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := iss2.IssueCertificate(ctx, ""); err != nil || again.Leaf.SerialNumber.Cmp(dom.Leaf.SerialNumber) != 0 {
		t.Errorf("after a restart: %v; want the kept certificate", err)
	}
}
