package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

func writeJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// writeFunctions writes one line per function and policy, tab-separated,
// for looking into where a policy gains or loses.
func writeFunctions(w io.Writer, tr *Trace, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprint(tw, "function\ttrigger\tinvocations")
	for _, r := range results {
		fmt.Fprintf(tw, "\t%s cold\t%s from zero\t%s replica-s\t%s idle-s", r.Policy, r.Policy, r.Policy, r.Policy)
	}
	fmt.Fprintln(tw)
	for fi, f := range tr.Functions {
		name := f.Key[strings.LastIndex(f.Key, "/")+1:]
		fmt.Fprintf(tw, "%.12s\t%s\t%d", name, f.Trigger, results[0].PerFunction[fi].Invocations)
		for _, r := range results {
			pf := r.PerFunction[fi]
			fmt.Fprintf(tw, "\t%d\t%d\t%.0f\t%.0f", pf.ColdStarts, pf.ColdStartsFromZero, pf.ReplicaSeconds, pf.IdleReplicaSeconds)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write functions: %w", err)
	}
	return nil
}

func writeTable(w io.Writer, tr *Trace, opts Options, results []Result) error {
	shard := ""
	if opts.Shards > 1 {
		shard = fmt.Sprintf(", shard %d/%d", opts.Shard, opts.Shards)
	}
	fmt.Fprintf(w, "trace %s: %d functions, %d minutes%s; seed %d, cold start %v, concurrency 1 per replica\n\n",
		opts.Trace, len(tr.Functions), tr.Minutes, shard, opts.Seed, opts.ColdStart)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tinvocations\tcold starts\tfrom zero\tcold fraction\tfn p50\tfn p75\tfn p90\treplica-s\tidle replica-s\tpeak replicas\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.4f\t%.3f\t%.3f\t%.3f\t%.0f\t%.0f\t%d\t\n",
			r.Policy, r.Invocations, r.ColdStarts, r.ColdStartsFromZero, r.ColdStartFraction,
			r.FunctionColdStartP50, r.FunctionColdStartP75, r.FunctionColdStartP90,
			r.ReplicaSeconds, r.IdleReplicaSeconds, r.PeakReplicas)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	by := map[string]Result{}
	for _, r := range results {
		by[r.Policy] = r
	}
	s, okS := by["surge"]
	f, okF := by["fixed10"]
	k, okK := by["knative"]
	if !okS || !okF && !okK {
		return nil
	}
	fmt.Fprintln(w)
	if okF {
		g := CheckFixed10(s, f)
		fmt.Fprintf(w, "surge vs fixed10: cold starts %s, idle replica-s %s: goal (fewer of both, one >= 2x) %s\n",
			ratio(f.ColdStarts, s.ColdStarts), ratioF(f.IdleReplicaSeconds, s.IdleReplicaSeconds), met(g))
	}
	if okK {
		g := CheckKnative(s, k)
		fmt.Fprintf(w, "surge vs knative: cold starts %s, replica-s x%.2f: goal (>= 3x fewer cold starts at <= 1.5x replica-s) %s\n",
			ratio(k.ColdStarts, s.ColdStarts), s.ReplicaSeconds/k.ReplicaSeconds, met(g))
	}
	return nil
}

// CheckFixed10 reports whether surge has fewer cold starts and fewer idle
// replica-seconds than fixed10, at least twice fewer on one of the two.
func CheckFixed10(surge, fixed10 Result) bool {
	fewer := surge.ColdStarts < fixed10.ColdStarts && surge.IdleReplicaSeconds < fixed10.IdleReplicaSeconds
	twice := 2*surge.ColdStarts <= fixed10.ColdStarts || 2*surge.IdleReplicaSeconds <= fixed10.IdleReplicaSeconds
	return fewer && twice
}

// CheckKnative reports whether surge has at least three times fewer cold
// starts than knative at no more than 1.5 times its replica-seconds.
func CheckKnative(surge, knative Result) bool {
	return 3*surge.ColdStarts <= knative.ColdStarts && surge.ReplicaSeconds <= 1.5*knative.ReplicaSeconds
}

func ratio(base, v int64) string {
	if v == 0 {
		return fmt.Sprintf("%d -> 0", base)
	}
	return fmt.Sprintf("%d -> %d (%.2fx fewer)", base, v, float64(base)/float64(v))
}

func ratioF(base, v float64) string {
	if v == 0 {
		return fmt.Sprintf("%.0f -> 0", base)
	}
	return fmt.Sprintf("%.0f -> %.0f (%.2fx fewer)", base, v, base/v)
}

func met(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}
