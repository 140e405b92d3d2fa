// Package benchmarks measures Surge against baselines run side by side in
// the same run (in this process, or in subprocesses pinned to a core), so
// that the ratios mean something on a noisy machine. `make bench` runs
// every benchmark and prints one table.
//
// Benchmarks:
//
//	B1  Gateway throughput: closed-loop requests per second through Surge's
//	    gateway, nginx, HAProxy and httputil.ReverseProxy, each on one
//	    core, and to the backend directly.
//	B1-TLS  B1 over TLS: Surge's gateway and nginx serving HTTPS, each on
//	    one core, the same certificate, TLS 1.3 with AES-128-GCM, kept-
//	    alive connections (wrk); httputil beside them.
//	B1-H2  The HTTP/2 decision's figures: the same load by h2load, one
//	    request in flight per connection, HTTP/1.1 over TLS and h2, through
//	    nginx, Surge (HTTP/1.1) and net/http's h2 with httputil.
//	B2  Gateway added latency: open-loop p50/p99 at 25/50/75% of nginx's
//	    B1 maximum, the same offered rates for every proxy, minus the
//	    backend's own at the same rate; Surge's judged against nginx's and
//	    HAProxy's at each.
//	B3  Cold start: a replica started by Surge's runtime until it answers
//	    HTTP, vs bare containerd (create, start, first answer) through the
//	    same client; and through a whole `surge up`.
//	B4  Burst: a step from 1 to 10 clients, until more replicas are
//	    requested and until they are Ready (no baseline).
//	B5  Placement: decisions per second of the scheduler's core over 5,000
//	    simulated nodes running 50,000 replicas, vs the naive filter-and-
//	    sort it replaced; and bindings per second through etcd
//	    (store.BindReplica) vs a bare compare-and-put loop, 32 in flight.
//	B6  Failure detection: 100 members of Surge's gossip (real memberlist
//	    over an in-memory network), 20 of them with every message delayed
//	    by 2 s: time until a killed member is declared dead, p50/p99 over
//	    100 deaths, and false positives.
//	B7  API mutating latency: create/replace a Function through the HTTPS
//	    API vs a raw etcd Put from the same process.
//	B9  Control plane at scale: a real `surge server` with 1,000 simulated
//	    nodes and 20 simulated gateways; 10,000 functions deployed, then
//	    new revisions timed until every gateway routes them; memory per
//	    node and per function.
//	B8  Gateway cost: allocations per proxied request, and memory per
//	    10,000 idle keep-alive client connections, with what it is made
//	    of for the Go proxies (stacks, heap by allocation site, runtime).
//	B10 Bursts: 0→500 and 0→5,000 concurrent requests to a function at
//	    zero, and a step from 10 to 500 clients on a warm one: success
//	    rate, time until all are answered, replicas asked and Ready over
//	    time, peak memory (no baseline).
//
// The autoscaler's policies are judged separately, on a real trace, by
// benchmarks/replay (`make bench` runs it after these).
package benchmarks

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one measured subject of a benchmark.
type Row struct {
	Bench   string
	Subject string
	// Samples are the latencies of every operation.
	Samples []time.Duration
	// Latency, when Samples is empty, is the quantiles a tool reported
	// (wrk, the open-loop generator) instead of every sample.
	Latency *Latency
	// Value is a measured quantity other than latency (throughput,
	// allocations, memory), shown when Unit is set, with its ratio to the
	// baseline's Value.
	Value float64
	Unit  string
	// Baseline marks the row the others are compared with.
	Baseline bool
	// Ref, when set, is what this row's latencies are compared with
	// instead of the benchmark's baseline row (a baseline measured at the
	// same offered load, say); it is not printed itself.
	Ref *Row
	// Delta shows latencies as differences from the baseline (or Ref)
	// instead of ratios: the latency a proxy adds.
	Delta bool
	// Note is shown at the end of the row (a goal, a caveat).
	Note string
}

// Latency is a latency distribution summarized by a tool.
type Latency struct {
	N        int64
	P50, P99 time.Duration
}

// quantiles returns the row's operation count, p50 and p99.
func (r Row) quantiles() (n int64, p50, p99 time.Duration) {
	if len(r.Samples) == 0 && r.Latency != nil {
		return r.Latency.N, r.Latency.P50, r.Latency.P99
	}
	return int64(len(r.Samples)), Quantile(r.Samples, 0.5), Quantile(r.Samples, 0.99)
}

// Quantile returns the q-quantile (0..1) of the samples, nearest rank.
func Quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(q*float64(len(c))+0.5) - 1
	return c[min(max(i, 0), len(c)-1)]
}

// Print writes rows as one table: p50 and p99 with their ratios to (or,
// for Delta rows, differences from) the benchmark's baseline row, and the
// row's Value with its ratio to the baseline's.
func Print(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCH\tSUBJECT\tN\tP50\tP99\tP50 VS BASE\tP99 VS BASE\tVALUE\tVALUE VS BASE\tNOTE\t")
	// A baseline row is the latency baseline of its benchmark and the
	// value baseline of its benchmark's rows in the same unit.
	base, valueBase := map[string]Row{}, map[[2]string]Row{}
	for _, r := range rows {
		if r.Baseline {
			base[r.Bench] = r
			valueBase[[2]string{r.Bench, r.Unit}] = r
		}
	}
	for _, r := range rows {
		n, p50, p99 := r.quantiles()
		r50, r99, rv := "-", "-", "-"
		b, ok := base[r.Bench]
		if r.Ref != nil {
			b, ok = *r.Ref, true
		}
		if ok && (!r.Baseline || r.Ref != nil) {
			_, b50, b99 := b.quantiles()
			if n > 0 && b50 > 0 {
				if r.Delta {
					r50, r99 = delta(p50, b50), delta(p99, b99)
				} else {
					r50, r99 = ratio(p50, b50), ratio(p99, b99)
				}
			}
		}
		if bv, ok := valueBase[[2]string{r.Bench, r.Unit}]; ok && !r.Baseline && r.Unit != "" && bv.Value != 0 {
			rv = fmt.Sprintf("%.2fx", r.Value/bv.Value)
		}
		subject := r.Subject
		if r.Baseline {
			subject += " (baseline)"
		}
		ns, s50, s99 := "-", "-", "-"
		if n > 0 {
			ns, s50, s99 = fmt.Sprint(n), round(p50), round(p99)
		}
		value := "-"
		if r.Unit != "" {
			value = formatValue(r.Value) + " " + r.Unit
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Bench, subject, ns,
			s50, s99, r50, r99, value, rv, r.Note)
	}
	return tw.Flush()
}

// formatValue prints v with three significant digits, or as an integer.
func formatValue(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e6:
		return fmt.Sprint(int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func delta(a, b time.Duration) string {
	d := a - b
	if d < 0 {
		return "-" + round(-d)
	}
	return "+" + round(d)
}

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

func round(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond).String()
	}
	return d.String()
}

// goal writes "goal: p99 ≤ X (met|MISSED)".
func goal(what string, got, limit time.Duration) string {
	verdict := "met"
	if got > limit {
		verdict = "MISSED"
	}
	return strings.TrimSpace(fmt.Sprintf("goal %s <= %s: %s", what, limit, verdict))
}
