// Command bench runs Surge's benchmarks and prints one table of ratios
// against baselines measured in the same run. `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/surgeplatform/surge/benchmarks"
)

func main() {
	only := flag.String("only", "", "run only the benchmarks whose name contains this, e.g. B3")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var rows []benchmarks.Row
	failed := false
	for _, b := range []struct {
		name string
		run  func(context.Context) ([]benchmarks.Row, error)
	}{
		{"B7 API mutating latency", benchmarks.APILatency},
		{"B1/B2/B8 gateway throughput, added latency and cost", benchmarks.Gateway},
		{"B1-TLS/B1-H2 gateway throughput over TLS, and the HTTP/2 figures", benchmarks.GatewayTLS},
		{"B3 cold start", benchmarks.ColdStart},
		{"B4 burst scale-up", benchmarks.Burst},
		{"B5 placement and bindings", benchmarks.Placement},
		{"B6 failure detection", benchmarks.FailureDetection},
		{"B9 control plane at 10,000 functions", benchmarks.ControlPlaneScale},
		{"B10 bursts from zero and on a warm function", benchmarks.BurstFromZero},
	} {
		if ctx.Err() != nil {
			break
		}
		if !strings.Contains(b.name, *only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s...\n", b.name)
		r, err := b.run(ctx)
		// A benchmark that fails (or cannot run here) does not stop the
		// others: its rows so far, and a row saying why.
		rows = append(rows, r...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", b.name, err)
			rows = append(rows, errorRow(b.name, err))
			if !errors.Is(err, benchmarks.ErrMissingDependency) || os.Getenv("CI") == "true" {
				failed = true
			}
		}
	}
	if err := benchmarks.Print(os.Stdout, rows); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if failed || ctx.Err() != nil {
		os.Exit(1)
	}
}

// errorRow is the table's note for a benchmark that failed, or was skipped
// for a missing dependency: the first line of its error, shortened.
func errorRow(name string, err error) benchmarks.Row {
	id, subject, _ := strings.Cut(name, " ")
	note := "error: "
	if errors.Is(err, benchmarks.ErrMissingDependency) {
		note = "skipped: "
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if r := []rune(msg); len(r) > 160 {
		msg = string(r[:157]) + "..."
	}
	return benchmarks.Row{Bench: id, Subject: subject, Note: note + msg}
}
