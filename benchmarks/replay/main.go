// Command replay replays a serverless trace through Surge's autoscaling
// decision core on a simulated clock and reports cold starts and replica
// time per policy.
//
//	go run ./benchmarks/replay -trace DIR [-policy fixed10|knative|surge|all] [-o table|json|functions]
//	                           [-seed N] [-cold-start 1s] [-shard I/N] [-workers N]
//
// The trace is in the format of benchmarks/testdata/azure2019-100 (the
// Azure Functions 2019 trace): per-minute invocation counts per function. The model:
//
//   - Each minute's invocations arrive as a Poisson process inside the
//     minute (uniform times given the count), each busy for a duration drawn
//     from the function's percentiles by linear interpolation of the inverse
//     CDF (at least 1ms). Arrivals depend only on -seed and the function, so
//     every policy, shard and worker count replays the same requests.
//   - One request per replica at a time, as on Lambda. A request that finds
//     no free ready replica is a cold start: it queues, and the gateway
//     starts a replica for it at once unless one already starting will take
//     it; a new replica is ready -cold-start later.
//   - Every simulated second the policy sees the second's sample (time-
//     averaged in-flight and queued requests, arrivals) and the ready
//     replicas. knative and surge run autoscaler.Decider (knative: KPA
//     defaults, no spare replicas, fixed 30s scale-to-zero grace; surge:
//     autoscaler.DefaultConfig). fixed10 keeps each replica 10 minutes after
//     its last use (Lambda), a per-replica rule without the core.
//   - replica-seconds count replicas from their start to their end, starting
//     ones included; idle replica-seconds are the part not serving a
//     request; peak replicas is the most replicas alive at once over all
//     functions, taking each function's most within each second.
//
// Nothing sleeps: the 480 minutes of the sample trace replay in about a
// second. -shard I/N keeps the functions whose key hash modulo N is I, for
// held-out checks; -o functions prints one line per function.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/surgeplatform/surge/autoscaler"
)

// Options are the replay's inputs.
type Options struct {
	// Trace is the trace directory.
	Trace string
	// Policies are the policies to replay, in output order.
	Policies []string
	// Output is "table", "json" or "functions".
	Output string
	// Seed seeds the arrival times and busy times.
	Seed uint64
	// ColdStart is how long a new replica takes to become ready.
	ColdStart time.Duration
	// ColdStartCost, when positive, replaces the surge policy's
	// autoscaler.Config.ColdStartCost: the replica time one avoided cold
	// start is worth, the dial between the two goals.
	ColdStartCost time.Duration
	// Shard, when Shards > 1, keeps the functions whose key hash modulo
	// Shards is Shard: a held-out split that does not depend on file order.
	Shard, Shards int
	// Workers is how many functions replay at once.
	Workers int
	// Stdout and Stderr receive the report and warnings.
	Stdout, Stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts, err := parseFlags(os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = run(ctx, opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stdout, stderr io.Writer) (Options, error) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := Options{Stdout: stdout, Stderr: stderr}
	var policy, shard string
	fs.StringVar(&opts.Trace, "trace", "", "trace directory holding invocations.csv and durations.csv (required)")
	fs.StringVar(&policy, "policy", "all", "policy to replay: fixed10, knative, surge or all")
	fs.StringVar(&opts.Output, "o", "table", "output format: table, json, or functions (one line per function)")
	fs.Uint64Var(&opts.Seed, "seed", 1, "random seed for arrival and busy times; the same seed gives the same numbers")
	fs.DurationVar(&opts.ColdStart, "cold-start", time.Second, "time a new replica takes to become ready")
	fs.DurationVar(&opts.ColdStartCost, "cold-start-cost", 0, "replica time one avoided cold start is worth to the surge policy (default: the autoscaler's, "+autoscaler.DefaultConfig().ColdStartCost.String()+")")
	fs.StringVar(&shard, "shard", "", "replay only shard I of N functions, split by key hash (I/N, e.g. 0/2)")
	fs.IntVar(&opts.Workers, "workers", runtime.GOMAXPROCS(0), "functions replayed in parallel (results do not depend on it)")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if opts.Trace == "" {
		return opts, errors.New("-trace is required: a directory with invocations.csv and durations.csv")
	}
	if policy == "all" {
		opts.Policies = Policies
	} else {
		opts.Policies = []string{policy}
	}
	if shard != "" {
		i, n, ok := strings.Cut(shard, "/")
		si, err1 := strconv.Atoi(i)
		sn, err2 := strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || sn < 1 || si < 0 || si >= sn {
			return opts, fmt.Errorf("-shard %q: want I/N with 0 <= I < N", shard)
		}
		opts.Shard, opts.Shards = si, sn
	}
	return opts, nil
}

// run replays the trace and writes the report.
func run(ctx context.Context, opts Options) error {
	switch opts.Output {
	case "table", "json", "functions":
	default:
		return fmt.Errorf("-o %q: want table, json or functions", opts.Output)
	}
	if opts.ColdStart < 0 {
		return fmt.Errorf("-cold-start %v: must not be negative", opts.ColdStart)
	}
	if opts.ColdStartCost < 0 {
		return fmt.Errorf("-cold-start-cost %v: must not be negative", opts.ColdStartCost)
	}
	for _, p := range opts.Policies {
		if _, err := newDriver(p, opts); err != nil {
			return err
		}
	}
	tr, err := LoadTrace(opts.Trace)
	if err != nil {
		return err
	}
	if tr.Missing > 0 && opts.Stderr != nil {
		fmt.Fprintf(opts.Stderr, "replay: %d functions have no durations row; their invocations take 1s\n", tr.Missing)
	}
	if opts.Shards > 1 {
		tr = tr.Shard(opts.Shard, opts.Shards)
	}
	results, err := Replay(ctx, tr, opts)
	if err != nil {
		return err
	}
	switch opts.Output {
	case "json":
		return writeJSON(opts.Stdout, results)
	case "functions":
		return writeFunctions(opts.Stdout, tr, results)
	}
	return writeTable(opts.Stdout, tr, opts, results)
}

// Shard returns the functions of t whose key hash modulo n is i.
func (t *Trace) Shard(i, n int) *Trace {
	out := &Trace{Minutes: t.Minutes}
	for _, f := range t.Functions {
		if f.Hash()%uint64(n) == uint64(i) {
			out.Functions = append(out.Functions, f)
		}
	}
	return out
}
