package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/gateway"
)

// TestGatewayJoinToken: the join token comes from --join-token-file, else
// SURGE_JOIN_TOKEN; --join-token, which ps would show, says what to use
// instead.
func TestGatewayJoinToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "join-token")
	if err := os.WriteFile(file, []byte("abc123abc123.from-the-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == JoinTokenEnv {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name      string
		o         GatewayOptions
		env       string
		want, err string
	}{
		{name: "file", o: GatewayOptions{joinTokenFile: file}, env: "abc123abc123.from-the-env", want: "abc123abc123.from-the-file"},
		{name: "environment", env: "abc123abc123.from-the-env\n", want: "abc123abc123.from-the-env"},
		{name: "none: endpoints from etcd alone"},
		{name: "flag", o: GatewayOptions{joinTokenFlag: "abc123abc123.secret"}, err: "--join-token shows the token to every user of this machine (ps): pass --join-token-file FILE, or set SURGE_JOIN_TOKEN"},
		{name: "empty file", o: GatewayOptions{joinTokenFile: empty}, err: "--join-token-file " + empty + " is empty"},
		{name: "missing file", o: GatewayOptions{joinTokenFile: filepath.Join(dir, "nope")}, err: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.o.joinToken(env(tc.env))
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("joinToken = %q, %v; want an error with %q", got, err, tc.err)
				}
			case err != nil || got != tc.want:
				t.Errorf("joinToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestGatewayClientLimitFlags: surge gateway and surge up take the flags
// that bound clients, with the gateway's defaults (path routing on, 1024
// connections per address, 30s for a body, no trusted proxy), and turn
// them into its Config; a bad network is named.
func TestGatewayClientLimitFlags(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want gateway.Config
		err  string
	}{
		{name: "defaults", want: gateway.Config{PathRouting: true, MaxConnsPerIP: 1024, RequestBodyTimeout: 30 * time.Second}},
		{name: "set",
			args: []string{"--path-routing=false", "--max-conns-per-ip", "0", "--request-body-timeout", "2m", "--trusted-proxies", "10.0.0.0/8,192.168.1.7,2001:db8::/32"},
			want: gateway.Config{MaxConnsPerIP: 0, RequestBodyTimeout: 2 * time.Minute, TrustedProxies: []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("2001:db8::/32")}}},
		{name: "bad network", args: []string{"--trusted-proxies", "10.0.0.0/33"}, err: `--trusted-proxies: "10.0.0.0/33" is neither a network`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &cobra.Command{Use: "gateway"}
			o := &GatewayOptions{}
			addGatewayFlags(c, o)
			if err := c.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			var got gateway.Config
			err := o.clientLimits(&got)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("clientLimits = %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Config (-want +got):\n%s", diff)
			}
		})
	}
	up := newUpCmd(cli.Streams{}, &cli.Globals{})
	for _, f := range []string{"path-routing", "max-conns-per-ip", "request-body-timeout", "trusted-proxies"} {
		if up.Flags().Lookup(f) == nil {
			t.Errorf("surge up has no --%s", f)
		}
	}
}
