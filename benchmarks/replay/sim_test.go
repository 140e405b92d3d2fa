package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/autoscaler"
)

func TestSimulateFixedKeepAlive(t *testing.T) {
	s := time.Second
	tests := []struct {
		name    string
		at, dur []time.Duration
		want    fnResult
	}{
		{
			name: "a use within the keep-alive is warm",
			// Cold at 10s (ready 11s, busy to 12s); warm at 300s (busy to
			// 301s); the replica goes 10m after its last use, at 901s.
			at: []time.Duration{10 * s, 300 * s}, dur: []time.Duration{s, s},
			want: fnResult{invocations: 2, coldStarts: 1, coldZero: 1, replicaNs: int64(891 * s), busyNs: int64(2 * s)},
		},
		{
			name: "a use after the keep-alive is cold again",
			at:   []time.Duration{10 * s, 700 * s}, dur: []time.Duration{s, s},
			// 10s..612s (ready 11s, busy to 12s), then 700s..1200s (the end).
			want: fnResult{invocations: 2, coldStarts: 2, coldZero: 2, replicaNs: int64(602*s + 500*s), busyNs: int64(2 * s)},
		},
		{
			name: "requests that find every replica busy are cold, one replica each",
			at:   []time.Duration{10 * s, 10 * s, 10 * s, 20 * s}, dur: []time.Duration{5 * s, 5 * s, 5 * s, s},
			// Three replicas ready at 11s, busy to 16s; the fourth request is
			// warm (the most recently freed replica). Only the first found
			// no replica at all; the others found one starting.
			want: fnResult{invocations: 4, coldStarts: 3, coldZero: 1, replicaNs: int64(3*600*s + 3*6*s + 5*s), busyNs: int64(16 * s)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := simulate(tt.at, tt.dur, fixedDriver{keep: 10 * time.Minute}, s, 1200*s)
			got.peaks = nil
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(fnResult{})); diff != "" {
				t.Errorf("simulate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSimulatePeaks(t *testing.T) {
	s := time.Second
	at := []time.Duration{10 * s, 10 * s, 10 * s}
	dur := []time.Duration{5 * s, 5 * s, 5 * s}
	got := simulate(at, dur, fixedDriver{keep: 30 * s}, s, 60*s)
	want := make([]int32, 60)
	for i := 10; i < 46; i++ { // started at 10s, ready at 11s, gone 30s after 16s
		want[i] = 3
	}
	if diff := cmp.Diff(want, got.peaks); diff != "" {
		t.Errorf("peaks mismatch (-want +got):\n%s", diff)
	}
}

// scripted is a driver that asks for fixed replica counts by second.
type scripted map[time.Duration]int

func (s scripted) tick(now time.Duration, _ autoscaler.Sample, _ int) int {
	if n, ok := s[now]; ok {
		return n
	}
	return -1
}
func (scripted) keepAlive() time.Duration { return 0 }

func TestSimulateFollowsTheDriver(t *testing.T) {
	s := time.Second
	// Two replicas from 5s (ready 6s); a request at 10s is warm; the
	// driver asks for zero at 20s; a request at 30s is cold and starts one
	// replica at once, which the driver does not stop (it says nothing).
	drv := scripted{5 * s: 2, 20 * s: 0}
	got := simulate([]time.Duration{10 * s, 30 * s}, []time.Duration{s, s}, drv, s, 40*s)
	got.peaks = nil
	want := fnResult{invocations: 2, coldStarts: 1, coldZero: 1, replicaNs: int64(2*15*s + 10*s), busyNs: int64(2 * s)}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(fnResult{})); diff != "" {
		t.Errorf("simulate() mismatch (-want +got):\n%s", diff)
	}
}

func TestDurationsSample(t *testing.T) {
	d := Durations{P: []float64{0, 0.5, 1}, V: []time.Duration{0, 100 * time.Millisecond, time.Second}}
	for u, want := range map[float64]time.Duration{0: 0, 0.25: 50 * time.Millisecond, 0.5: 100 * time.Millisecond, 0.75: 550 * time.Millisecond, 1: time.Second} {
		if got := d.Sample(u); got != want {
			t.Errorf("Sample(%v) = %v, want %v", u, got, want)
		}
	}
	if got := (Durations{}).Sample(0.3); got != time.Second {
		t.Errorf("empty Sample = %v, want 1s", got)
	}
}

func TestArrivalsArePoissonWithinEachMinute(t *testing.T) {
	f := &Function{Key: "o/a/f", Counts: []int{3, 0, 5}, Durations: Durations{P: []float64{0, 1}, V: []time.Duration{time.Second, time.Second}}}
	at, dur := arrivals(f, 7)
	if len(at) != 8 || len(dur) != 8 {
		t.Fatalf("got %d arrivals, %d durations; want 8, 8", len(at), len(dur))
	}
	for i, a := range at {
		minute := 0
		if i >= 3 {
			minute = 2
		}
		if a < time.Duration(minute)*time.Minute || a >= time.Duration(minute+1)*time.Minute {
			t.Errorf("arrival %d at %v, want inside minute %d", i, a, minute)
		}
		if i > 0 && a < at[i-1] {
			t.Errorf("arrivals not sorted: %v then %v", at[i-1], a)
		}
	}
	again, _ := arrivals(f, 7)
	if diff := cmp.Diff(at, again); diff != "" {
		t.Errorf("same seed, different arrivals:\n%s", diff)
	}
	other, _ := arrivals(f, 8)
	if cmp.Equal(at, other) {
		t.Errorf("seeds 7 and 8 gave the same arrivals")
	}
}
