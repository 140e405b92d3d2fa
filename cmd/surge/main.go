// Command surge is Surge's single binary: the server roles, composed here
// (up, server, agent, gateway), and the client verbs of package cli.
// See `surge --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/surgeplatform/surge/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// serverVerbs are the verbs that run a role: they import the roles, which
// the client verbs of package cli never do.
var serverVerbs = []cli.Verb{newServerCmd, newUpCmd, newAgentCmd, newGatewayCmd, newAdminCmd}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, version, serverVerbs...)
	stop()
	os.Exit(code)
}
