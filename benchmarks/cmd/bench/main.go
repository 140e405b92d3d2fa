// Command bench runs Surge's benchmarks and prints one table of ratios
// against baselines measured in the same run. `make bench` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/surgeplatform/surge/benchmarks"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var rows []benchmarks.Row
	for _, b := range []struct {
		name string
		run  func(context.Context) ([]benchmarks.Row, error)
	}{
		{"B7 API mutating latency", benchmarks.APILatency},
	} {
		fmt.Fprintf(os.Stderr, "running %s...\n", b.name)
		r, err := b.run(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", b.name, err)
			os.Exit(1)
		}
		rows = append(rows, r...)
	}
	if err := benchmarks.Print(os.Stdout, rows); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
