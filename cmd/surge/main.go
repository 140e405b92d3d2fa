// Command surge is Surge's single binary: every server role and the client
// verbs. See `surge --help`.
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, version)
	stop()
	os.Exit(code)
}
