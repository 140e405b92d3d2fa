package api_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func TestLatencyBucketBounds(t *testing.T) {
	// Every latency falls in the bucket whose bounds hold it, and buckets
	// never go down as latency grows.
	prev := 0
	for d := time.Duration(0); d < 200*time.Second; d = d*9/8 + time.Microsecond {
		b := api.LatencyBucket(d)
		if b < prev {
			t.Fatalf("LatencyBucket(%v) = %d, below %d for a shorter latency", d, b, prev)
		}
		prev = b
		lo := api.LatencyBucketLow(b)
		if d.Truncate(time.Microsecond) < lo {
			t.Fatalf("LatencyBucket(%v) = %d, whose low bound is %v", d, b, lo)
		}
		if b < api.LatencyBuckets-1 && d.Truncate(time.Microsecond) >= api.LatencyBucketLow(b+1) {
			t.Fatalf("LatencyBucket(%v) = %d, but bucket %d starts at %v", d, b, b+1, api.LatencyBucketLow(b+1))
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {999 * time.Nanosecond, 0}, {time.Microsecond, 1}, {2 * time.Microsecond, 3},
		{3 * time.Microsecond, 4}, {4 * time.Microsecond, 5}, {6 * time.Microsecond, 6},
		{time.Hour, api.LatencyBuckets - 1},
	} {
		if got := api.LatencyBucket(tt.d); got != tt.want {
			t.Errorf("LatencyBucket(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

// outcomesOf counts latencies as a gateway does.
func outcomesOf(errors int64, ds ...time.Duration) api.Outcomes {
	o := api.Outcomes{Requests: int64(len(ds)), Errors: errors, Latency: make([]int64, api.LatencyBuckets)}
	for _, d := range ds {
		o.Latency[api.LatencyBucket(d)]++
	}
	return o
}

func TestOutcomesQuantile(t *testing.T) {
	var ds []time.Duration
	for range 990 {
		ds = append(ds, 5*time.Millisecond)
	}
	for range 10 {
		ds = append(ds, 400*time.Millisecond)
	}
	o := outcomesOf(0, ds...)
	// Half-octave buckets: within the bucket, at most 1.5x its low bound.
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 5 * time.Millisecond}, {0.995, 400 * time.Millisecond}, {1, 400 * time.Millisecond}} {
		got := o.Quantile(tt.q)
		if got < tt.want*2/3 || got > tt.want*3/2 {
			t.Errorf("Quantile(%g) = %v, want %v within a half-octave", tt.q, got, tt.want)
		}
	}
	if got := (api.Outcomes{}).Quantile(0.99); got != 0 {
		t.Errorf("Quantile of nothing = %v, want 0", got)
	}
}

func TestOutcomesSinceAndMerge(t *testing.T) {
	before := outcomesOf(1, time.Millisecond, 2*time.Millisecond)
	after := before.Clone()
	after.Merge(outcomesOf(2, time.Millisecond, time.Second, time.Second))
	got := after.Since(before)
	want := outcomesOf(2, time.Millisecond, time.Second, time.Second)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Since (-want +got):\n%s", diff)
	}
	if before.Requests != 2 || before.Latency[api.LatencyBucket(time.Second)] != 0 {
		t.Errorf("Merge into a clone changed the original: %+v", before)
	}
	// A gateway that started again counts from zero: all of it is new.
	restarted := outcomesOf(0, time.Millisecond)
	if diff := cmp.Diff(restarted, restarted.Since(before)); diff != "" {
		t.Errorf("Since after a restart (-want +got):\n%s", diff)
	}
	// Trailing buckets left out merge as zeros.
	short := api.Outcomes{Requests: 1, Latency: []int64{0, 1}}
	short.Merge(outcomesOf(0, time.Second))
	if short.Requests != 2 || short.Latency[1] != 1 || short.Latency[api.LatencyBucket(time.Second)] != 1 {
		t.Errorf("Merge of a shorter histogram: %+v", short)
	}
}
