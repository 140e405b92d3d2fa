package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/gateway"
)

// TestGatewayRefusesTheJoinToken: the join token is for nodes, used once
// to obtain a node's certificate; a gateway gets the gossip key from the
// API with its own token. The flags that gave it the join token say so,
// with exit code 2 and one line, before anything starts.
func TestGatewayRefusesTheJoinToken(t *testing.T) {
	for _, flag := range []string{"--join-token-file=/etc/surge/join-token", "--join-token=abc123.secret"} {
		var out, errb bytes.Buffer
		code := cli.Execute(context.Background(), []string{"gateway", "--api", "https://127.0.0.1:7070", flag},
			cli.Streams{In: strings.NewReader(""), Out: &out, Err: &errb}, "test", serverVerbs...)
		want := "surge: a gateway no longer takes the join token: it gets the gossip key from the API with its gateway token; drop --join-token-file\n"
		if code != 2 || errb.String() != want {
			t.Errorf("surge gateway %s: exit %d, stderr %q; want 2, %q", flag, code, errb.String(), want)
		}
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
