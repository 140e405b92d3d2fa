package autoscaler

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWindows(t *testing.T) {
	type step struct {
		bucket int64
		demand float64 // 0 means only advance
	}
	tests := []struct {
		name        string
		steps       []step
		wantStable  float64
		wantPanic   float64
		stable, pan int
	}{
		{
			name:   "young window averages over what it has seen",
			stable: 10, pan: 2,
			steps:      []step{{100, 4}, {101, 2}},
			wantStable: 3, wantPanic: 3,
		},
		{
			name:   "panic window holds the newest buckets",
			stable: 10, pan: 2,
			steps:      []step{{100, 10}, {101, 0}, {102, 0}, {103, 6}},
			wantStable: 4, wantPanic: 3,
		},
		{
			name:   "old buckets leave",
			stable: 4, pan: 1,
			steps:      []step{{100, 8}, {101, 4}, {104, 0}},
			wantStable: 1, wantPanic: 0,
		},
		{
			name:   "a jump past the window empties it exactly",
			stable: 4, pan: 2,
			steps:      []step{{100, 0.1}, {101, 0.2}, {102, 0.3}, {200, 0}},
			wantStable: 0, wantPanic: 0,
		},
		{
			name:   "samples of one bucket add up; late ones land in their bucket",
			stable: 4, pan: 2,
			steps:      []step{{100, 1}, {103, 1}, {103, 1}, {102, 2}, {99, 100}},
			wantStable: 1.25, wantPanic: 2,
		},
		{
			name:   "drifting floats sum back to zero",
			stable: 3, pan: 1,
			steps:      []step{{1, 0.1}, {2, 0.7}, {3, 0.3333333}, {4, 0}, {5, 0}, {6, 0}},
			wantStable: 0, wantPanic: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindows(tt.stable, tt.pan)
			for _, s := range tt.steps {
				if s.demand == 0 {
					w.advance(s.bucket)
					continue
				}
				w.add(s.bucket, vec{demand: fixed(s.demand)})
			}
			st, pa := w.averages()
			got := []float64{st.demand, pa.demand}
			want := []float64{tt.wantStable, tt.wantPanic}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("averages (stable, panic) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
