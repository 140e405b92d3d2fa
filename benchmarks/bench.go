// Package benchmarks measures Surge against baselines run side by side in
// the same process and the same run, so that the ratios mean something on a
// noisy machine. `make bench` runs every benchmark and prints one table.
//
// Benchmarks:
//
//	B7  API mutating latency: create/replace a Function through the HTTPS
//	    API vs a raw etcd Put from the same process.
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
	// Baseline marks the row the others are compared with.
	Baseline bool
	// Note is shown at the end of the row (a goal, a caveat).
	Note string
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

// Print writes rows as one table: p50, p99 and their ratios to the
// benchmark's baseline row.
func Print(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCH\tSUBJECT\tN\tP50\tP99\tP50 RATIO\tP99 RATIO\tNOTE\t")
	base := map[string]Row{}
	for _, r := range rows {
		if r.Baseline {
			base[r.Bench] = r
		}
	}
	for _, r := range rows {
		p50, p99 := Quantile(r.Samples, 0.5), Quantile(r.Samples, 0.99)
		r50, r99 := "-", "-"
		if b, ok := base[r.Bench]; ok && !r.Baseline {
			r50 = ratio(p50, Quantile(b.Samples, 0.5))
			r99 = ratio(p99, Quantile(b.Samples, 0.99))
		}
		subject := r.Subject
		if r.Baseline {
			subject += " (baseline)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Bench, subject, len(r.Samples),
			round(p50), round(p99), r50, r99, r.Note)
	}
	return tw.Flush()
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
