package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
