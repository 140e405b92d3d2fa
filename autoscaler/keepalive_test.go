package autoscaler

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewIdleTimesRejectsBadInput(t *testing.T) {
	cfg := DefaultConfig().KeepAlive
	bad := cfg
	bad.MinSamples = 0
	for _, c := range []struct {
		name         string
		cfg          KeepAliveConfig
		period, cost time.Duration
	}{
		{"bad config", bad, time.Second, time.Minute},
		{"zero period", cfg, 0, time.Minute},
		{"period above a bucket", cfg, 2 * time.Minute, time.Minute},
		{"negative cost", cfg, time.Second, -time.Minute},
	} {
		if _, err := NewIdleTimes(c.cfg, c.period, c.cost); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: NewIdleTimes() = %v, want ErrInvalidConfig", c.name, err)
		}
	}
}

func TestIdleTimes(t *testing.T) {
	tests := []struct {
		name     string
		gaps     []time.Duration
		wantIdle []bool // what Add reported, gap by gap
		want     Prediction
	}{
		{
			name:     "pauses within a use are not idle times",
			gaps:     []time.Duration{0, 5 * time.Second, 59 * time.Second, time.Minute, 90 * time.Minute},
			wantIdle: []bool{false, false, false, true, true},
			// Two idle times (1m and 90m) are too few, and too far apart to
			// pre-warm around: the fixed keep-alive alone.
			want: Prediction{Kind: PredictFixed, Until: 10 * time.Minute},
		},
		{
			name: "bursty timer: release after the pauses, pre-warm before the next burst",
			gaps: []time.Duration{
				3 * time.Second, 10 * time.Second, 9*time.Minute + 10*time.Second,
				2 * time.Second, 9*time.Minute + 20*time.Second,
				10 * time.Second, 9*time.Minute + 5*time.Second,
				9*time.Minute + 15*time.Second, 9*time.Minute + 25*time.Second,
			},
			wantIdle: []bool{false, false, true, false, true, false, true, true, true},
			// Pauses: 99th percentile in the [10s, 11s) bucket, +5%.
			// Idle times in the [9m, 10m) bucket: pre-warm at 9m-5%, keep
			// until 10m+5%.
			want: Prediction{Kind: PredictPrewarm, Prewarm: 513 * time.Second, Until: 630 * time.Second, Linger: 11550 * time.Millisecond},
		},
		{
			// 150 pauses of 2s and one of 40s: the 99th percentile would
			// release after 3s and make the 40s pause's next request cold,
			// but lingering 41s after each of the 3 uses costs less than
			// that cold start.
			name:     "a rare long pause is worth lingering for when uses are few",
			gaps:     append(append(repeat(2*time.Second, 150), 40*time.Second), repeat(9*time.Minute+10*time.Second, 3)...),
			wantIdle: append(make([]bool, 151), true, true, true),
			want:     Prediction{Kind: PredictPrewarm, Prewarm: 513 * time.Second, Until: 630 * time.Second, Linger: 43050 * time.Millisecond},
		},
		{
			// The same long pause among 30 uses: lingering 41s after each
			// would cost more than the one cold start it saves.
			name:     "a rare long pause is not worth lingering for after every use",
			gaps:     append(append(repeat(2*time.Second, 20), 40*time.Second), repeat(9*time.Minute+10*time.Second, 30)...),
			wantIdle: append(make([]bool, 21), slices.Repeat([]bool{true}, 30)...),
			want:     Prediction{Kind: PredictPrewarm, Prewarm: 513 * time.Second, Until: 630 * time.Second, Linger: 3150 * time.Millisecond},
		},
		{
			name: "every minute or so: pauses reach the pre-warm, so keep alive",
			gaps: []time.Duration{
				50 * time.Second, 59 * time.Second, 61 * time.Second, 70 * time.Second,
				65 * time.Second, 80 * time.Second, 75 * time.Second,
			},
			wantIdle: []bool{false, false, true, true, true, true, true},
			want:     Prediction{Kind: PredictKeepAlive, Until: 126 * time.Second},
		},
		{
			name: "spread and long: release after each use",
			gaps: []time.Duration{
				5 * time.Minute, 20 * time.Minute, 40 * time.Minute, 60 * time.Minute, 80 * time.Minute, 100 * time.Minute,
			},
			wantIdle: []bool{true, true, true, true, true, true},
			want:     Prediction{Kind: PredictRelease},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := NewIdleTimes(DefaultConfig().KeepAlive, time.Second, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var gotIdle []bool
			for _, g := range tt.gaps {
				gotIdle = append(gotIdle, it.Add(g))
			}
			if diff := cmp.Diff(tt.wantIdle, gotIdle); diff != "" {
				t.Errorf("Add() results mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, it.Prediction()); diff != "" {
				t.Errorf("Prediction() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdleTimesCloneIsIndependent(t *testing.T) {
	it, err := NewIdleTimes(DefaultConfig().KeepAlive, time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := it.Clone()
	c.Add(time.Hour)
	c.Add(time.Second)
	if it.Idle().Count() != 0 || it.Pauses().Count() != 0 || c.Idle().Count() != 1 || c.Pauses().Count() != 1 {
		t.Errorf("clone shares state with the original")
	}
}
