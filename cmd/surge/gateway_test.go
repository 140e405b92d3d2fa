package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/cli"
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
