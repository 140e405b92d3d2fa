package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"
)

// Result is one policy's outcome over a trace.
type Result struct {
	Policy string `json:"policy"`
	// Invocations is the number of requests replayed.
	Invocations int64 `json:"invocations"`
	// ColdStarts is the number of requests that found no free replica.
	ColdStarts int64 `json:"cold_starts"`
	// ColdStartsFromZero is the part of ColdStarts that found no replica
	// at all, not even a starting one; the others found every replica
	// busy.
	ColdStartsFromZero int64 `json:"-"`
	// ColdStartFraction is ColdStarts / Invocations.
	ColdStartFraction float64 `json:"cold_start_fraction"`
	// FunctionColdStartP50, P75 and P90 are percentiles over functions
	// (those with invocations) of each function's cold-start fraction.
	FunctionColdStartP50 float64 `json:"-"`
	FunctionColdStartP75 float64 `json:"-"`
	FunctionColdStartP90 float64 `json:"-"`
	// ReplicaSeconds is the time replicas existed, starting ones included.
	ReplicaSeconds float64 `json:"replica_seconds"`
	// IdleReplicaSeconds is the part of ReplicaSeconds not serving a
	// request (starting or idle).
	IdleReplicaSeconds float64 `json:"idle_replica_seconds"`
	// PeakReplicas is the most replicas alive at once over all functions,
	// taking each function's most within each second.
	PeakReplicas int `json:"peak_replicas"`

	// PerFunction holds each function's cold starts and invocations, in
	// trace order; for tests and the held-out check.
	PerFunction []FunctionResult `json:"-"`
}

// FunctionResult is one function's outcome under one policy.
type FunctionResult struct {
	Key                string
	Invocations        int64
	ColdStarts         int64
	ColdStartsFromZero int64
	ReplicaSeconds     float64
	IdleReplicaSeconds float64
}

// Replay runs every policy of opts over every function of tr and returns
// one Result per policy, in opts.Policies order. Functions are independent,
// so they replay on opts.Workers goroutines; the results do not depend on
// the number of workers.
func Replay(ctx context.Context, tr *Trace, opts Options) ([]Result, error) {
	end := time.Duration(tr.Minutes) * time.Minute
	seconds := int(end / time.Second)
	nf, np := len(tr.Functions), len(opts.Policies)
	per := make([][]fnResult, nf) // [function][policy]
	peaks := make([][]int64, np)
	for i := range peaks {
		peaks[i] = make([]int64, seconds)
	}

	var (
		mu       sync.Mutex // guards peaks and firstErr
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan int)
	workers := max(1, opts.Workers)
	for range workers {
		wg.Go(func() {
			for fi := range jobs {
				f := &tr.Functions[fi]
				at, dur := arrivals(f, opts.Seed)
				rs := make([]fnResult, np)
				for pi, p := range opts.Policies {
					drv, err := newDriver(p, opts)
					if err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
						continue
					}
					rs[pi] = simulate(at, dur, drv, opts.ColdStart, end)
				}
				mu.Lock()
				for pi := range rs {
					for s, v := range rs[pi].peaks {
						peaks[pi][s] += int64(v)
					}
					rs[pi].peaks = nil
				}
				mu.Unlock()
				per[fi] = rs
			}
		})
	}
feed:
	for fi := range nf {
		select {
		case jobs <- fi:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replay %d functions: %w", nf, err)
	}
	if firstErr != nil {
		return nil, firstErr
	}

	out := make([]Result, np)
	for pi, p := range opts.Policies {
		r := Result{Policy: p}
		var fracs []float64
		var replicaNs, busyNs int64
		for fi := range nf {
			fr := per[fi][pi]
			r.Invocations += fr.invocations
			r.ColdStarts += fr.coldStarts
			r.ColdStartsFromZero += fr.coldZero
			replicaNs += fr.replicaNs
			busyNs += fr.busyNs
			if fr.invocations > 0 {
				fracs = append(fracs, float64(fr.coldStarts)/float64(fr.invocations))
			}
			r.PerFunction = append(r.PerFunction, FunctionResult{
				Key:                tr.Functions[fi].Key,
				Invocations:        fr.invocations,
				ColdStarts:         fr.coldStarts,
				ColdStartsFromZero: fr.coldZero,
				ReplicaSeconds:     time.Duration(fr.replicaNs).Seconds(),
				IdleReplicaSeconds: time.Duration(fr.replicaNs - fr.busyNs).Seconds(),
			})
		}
		if r.Invocations > 0 {
			r.ColdStartFraction = float64(r.ColdStarts) / float64(r.Invocations)
		}
		sort.Float64s(fracs)
		r.FunctionColdStartP50 = percentile(fracs, 50)
		r.FunctionColdStartP75 = percentile(fracs, 75)
		r.FunctionColdStartP90 = percentile(fracs, 90)
		r.ReplicaSeconds = round3(time.Duration(replicaNs).Seconds())
		r.IdleReplicaSeconds = round3(time.Duration(replicaNs - busyNs).Seconds())
		for _, v := range peaks[pi] {
			r.PeakReplicas = max(r.PeakReplicas, int(v))
		}
		out[pi] = r
	}
	return out, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// percentile returns the p-th percentile of sorted xs by the nearest-rank
// method, or 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(xs))))
	return xs[min(max(rank, 1), len(xs))-1]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
