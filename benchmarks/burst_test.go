package benchmarks

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStepWatch(t *testing.T) {
	step := time.Unix(1000, 0)
	at := func(ms int) time.Time { return step.Add(time.Duration(ms) * time.Millisecond) }
	type reading struct {
		ms           int
		asked, ready int32
	}
	type result struct {
		Done         bool
		Asked, Ready time.Duration
	}
	tests := []struct {
		name     string
		before   int32
		readings []reading
		want     result
	}{
		{
			name:   "asked then ready",
			before: 1,
			readings: []reading{
				{20, 1, 1}, {1000, 4, 1}, {1020, 9, 1}, {1500, 9, 2}, {1520, 9, 5},
			},
			want: result{Done: true, Asked: time.Second, Ready: 1500 * time.Millisecond},
		},
		{
			name:     "not yet ready",
			before:   1,
			readings: []reading{{20, 1, 1}, {1000, 3, 1}},
			want:     result{Asked: time.Second},
		},
		{
			// Both rises seen in one reading: asked no later than ready.
			name:     "same reading",
			before:   2,
			readings: []reading{{20, 2, 2}, {700, 5, 3}},
			want:     result{Done: true, Asked: 700 * time.Millisecond, Ready: 700 * time.Millisecond},
		},
		{
			// before is the most asked or ready at the step: a replica
			// asked before the step that becomes ready is not new.
			name:     "old replica becoming ready is not new",
			before:   2,
			readings: []reading{{20, 2, 2}, {400, 2, 2}, {900, 3, 2}, {1300, 3, 3}},
			want:     result{Done: true, Asked: 900 * time.Millisecond, Ready: 1300 * time.Millisecond},
		},
		{
			// The autoscaler lowering its ask later does not undo the rise.
			name:     "first rise counts",
			before:   1,
			readings: []reading{{500, 3, 1}, {520, 1, 1}, {900, 1, 2}},
			want:     result{Done: true, Asked: 500 * time.Millisecond, Ready: 900 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := stepWatch{before: tt.before, step: step}
			var got result
			for _, r := range tt.readings {
				got.Done = w.observe(at(r.ms), r.asked, r.ready)
			}
			got.Asked, got.Ready = w.asked(), w.ready()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("stepWatch (-want +got):\n%s", diff)
			}
		})
	}
}
