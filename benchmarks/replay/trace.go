package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Function is one function of a trace.
type Function struct {
	// Key identifies the function: owner, app and function hashes.
	Key string
	// Trigger is the trace's trigger kind (http, timer, queue, ...).
	Trigger string
	// Counts holds the invocations of each minute.
	Counts []int
	// Durations is the distribution invocations' busy times are drawn from.
	Durations Durations
}

// Hash returns a stable 64-bit hash of the function's key, used to seed
// its random numbers and to split functions into shards.
func (f *Function) Hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(f.Key))
	return h.Sum64()
}

// Durations is an execution-time distribution given by percentiles, sampled
// by linear interpolation of its inverse CDF.
type Durations struct {
	// P holds the percentiles as fractions in [0, 1], increasing.
	P []float64
	// V holds the values at P, non-decreasing.
	V []time.Duration
}

// Sample maps u in [0, 1) to a duration of the distribution.
func (d Durations) Sample(u float64) time.Duration {
	if len(d.P) == 0 {
		return time.Second
	}
	if u <= d.P[0] {
		return d.V[0]
	}
	for i := 1; i < len(d.P); i++ {
		if u <= d.P[i] {
			f := (u - d.P[i-1]) / (d.P[i] - d.P[i-1])
			return d.V[i-1] + time.Duration(f*float64(d.V[i]-d.V[i-1]))
		}
	}
	return d.V[len(d.V)-1]
}

// Trace is a set of functions' per-minute invocation counts.
type Trace struct {
	// Functions in file order.
	Functions []Function
	// Minutes is the number of minutes every function has.
	Minutes int
	// Missing counts functions without a durations row; they run for 1s.
	Missing int
}

// LoadTrace reads invocations.csv and durations.csv of dir, in the format
// of the Azure Functions 2019 trace (see benchmarks/testdata/azure2019-100/README.md).
func LoadTrace(dir string) (*Trace, error) {
	durs, err := loadDurations(filepath.Join(dir, "durations.csv"))
	if err != nil {
		return nil, fmt.Errorf("load trace %s: %w", dir, err)
	}
	tr, err := loadInvocations(filepath.Join(dir, "invocations.csv"), durs)
	if err != nil {
		return nil, fmt.Errorf("load trace %s: %w", dir, err)
	}
	return tr, nil
}

func readCSV(path string) ([]string, [][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	var rows [][]string
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", path, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) != len(header) {
			return nil, nil, fmt.Errorf("read %s: row %d has %d fields, header has %d", path, len(rows)+2, len(rec), len(header))
		}
		rows = append(rows, rec)
	}
	return header, rows, nil
}

func column(header []string, name string) int {
	for i, h := range header {
		if strings.TrimSpace(h) == name {
			return i
		}
	}
	return -1
}

func loadDurations(path string) (map[string]Durations, error) {
	header, rows, err := readCSV(path)
	if err != nil {
		return nil, err
	}
	owner, app, fn := column(header, "HashOwner"), column(header, "HashApp"), column(header, "HashFunction")
	if owner < 0 || app < 0 || fn < 0 {
		return nil, fmt.Errorf("read %s: need HashOwner, HashApp and HashFunction columns", path)
	}
	type pcol struct {
		p   float64
		col int
	}
	var pcols []pcol
	for i, h := range header {
		if s, ok := strings.CutPrefix(strings.TrimSpace(h), "percentile_Average_"); ok {
			p, err := strconv.ParseFloat(s, 64)
			if err != nil || p < 0 || p > 100 {
				return nil, fmt.Errorf("read %s: column %q: bad percentile", path, h)
			}
			pcols = append(pcols, pcol{p / 100, i})
		}
	}
	if len(pcols) == 0 {
		return nil, fmt.Errorf("read %s: no percentile_Average_* columns", path)
	}
	sort.Slice(pcols, func(i, j int) bool { return pcols[i].p < pcols[j].p })
	out := make(map[string]Durations, len(rows))
	for n, rec := range rows {
		var d Durations
		for _, pc := range pcols {
			ms, err := strconv.ParseFloat(strings.TrimSpace(rec[pc.col]), 64)
			if err != nil || ms < 0 || math.IsNaN(ms) || math.IsInf(ms, 0) {
				return nil, fmt.Errorf("read %s: row %d: %s = %q: not a duration in ms", path, n+2, header[pc.col], rec[pc.col])
			}
			v := time.Duration(ms * float64(time.Millisecond))
			if len(d.V) > 0 && v < d.V[len(d.V)-1] {
				v = d.V[len(d.V)-1] // the trace's percentiles are rounded; keep them monotone
			}
			d.P = append(d.P, pc.p)
			d.V = append(d.V, v)
		}
		out[rec[owner]+"/"+rec[app]+"/"+rec[fn]] = d
	}
	return out, nil
}

func loadInvocations(path string, durs map[string]Durations) (*Trace, error) {
	header, rows, err := readCSV(path)
	if err != nil {
		return nil, err
	}
	owner, app, fn, trig := column(header, "HashOwner"), column(header, "HashApp"), column(header, "HashFunction"), column(header, "Trigger")
	if owner < 0 || app < 0 || fn < 0 {
		return nil, fmt.Errorf("read %s: need HashOwner, HashApp and HashFunction columns", path)
	}
	var minuteCols []int
	for i, h := range header {
		if _, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
			minuteCols = append(minuteCols, i)
		}
	}
	if len(minuteCols) == 0 {
		return nil, fmt.Errorf("read %s: no minute columns", path)
	}
	tr := &Trace{Minutes: len(minuteCols)}
	for n, rec := range rows {
		f := Function{Key: rec[owner] + "/" + rec[app] + "/" + rec[fn], Counts: make([]int, len(minuteCols))}
		if trig >= 0 {
			f.Trigger = rec[trig]
		}
		for i, c := range minuteCols {
			v, err := strconv.Atoi(strings.TrimSpace(rec[c]))
			if err != nil || v < 0 {
				return nil, fmt.Errorf("read %s: row %d: minute %s = %q: not a count", path, n+2, header[c], rec[c])
			}
			f.Counts[i] = v
		}
		d, ok := durs[f.Key]
		if !ok {
			tr.Missing++
		}
		f.Durations = d
		tr.Functions = append(tr.Functions, f)
	}
	return tr, nil
}
