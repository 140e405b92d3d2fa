package cli

import (
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
)

func TestAge(t *testing.T) {
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{-time.Minute, "0s"}, // clock skew: the object looks newer than now
		{0, "0s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{179 * time.Minute, "179m"},
		{3 * time.Hour, "3h"},
		{71*time.Hour + 59*time.Minute, "71h"},
		{72 * time.Hour, "3d"},
		{400 * 24 * time.Hour, "400d"},
	}
	for _, tt := range tests {
		if got := age(testNow, testNow.Add(-tt.ago)); got != tt.want {
			t.Errorf("age(%v ago) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := age(testNow, time.Time{}); got != "" {
		t.Errorf("age of the zero time = %q, want empty (printed as <none>)", got)
	}
}

func TestScaleRange(t *testing.T) {
	tests := []struct {
		p    api.ScalingPolicy
		want string
	}{
		{api.ScalingPolicy{}, "0-inf"},
		{api.ScalingPolicy{MinScale: 2}, "2-inf"},
		{api.ScalingPolicy{MinScale: 1, MaxScale: 10}, "1-10"},
	}
	for _, tt := range tests {
		if got := scaleRange(tt.p); got != tt.want {
			t.Errorf("scaleRange(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
