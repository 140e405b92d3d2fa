package benchmarks

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestColdStartNote(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name         string
		p50, bareP50 time.Duration
		want         string
	}{
		// 1.3 x 50ms = 65ms is the tighter bound.
		{"within the ratio", 60 * ms, 50 * ms, "goal p50 <= 1.3x base and <= 100ms (65ms): met"},
		{"on the ratio", 65 * ms, 50 * ms, "goal p50 <= 1.3x base and <= 100ms (65ms): met"},
		{"over the ratio", 66 * ms, 50 * ms, "goal p50 <= 1.3x base and <= 100ms (65ms): MISSED"},
		// 1.3 x 90ms = 117ms: 100ms is the tighter bound.
		{"within the ratio, over 100ms", 110 * ms, 90 * ms, "goal p50 <= 1.3x base and <= 100ms (100ms): MISSED"},
		{"within both", 95 * ms, 90 * ms, "goal p50 <= 1.3x base and <= 100ms (100ms): met"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := coldStartNote(tt.p50, tt.bareP50); got != tt.want {
				t.Errorf("coldStartNote(%s, %s) = %q, want %q", tt.p50, tt.bareP50, got, tt.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	var got [][]int
	for i := range 4 {
		got = append(got, rotation(i, 3))
	}
	want := [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rotation (-want +got):\n%s", diff)
	}
}

func TestNeedRuntimeWrapsSentinel(t *testing.T) {
	// Whatever this machine has, a failure must be recognizable as a
	// missing dependency.
	if err := needRuntime("B3"); err != nil && !errors.Is(err, ErrMissingDependency) {
		t.Errorf("needRuntime: %v does not wrap ErrMissingDependency", err)
	}
}
