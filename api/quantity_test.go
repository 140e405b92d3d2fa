package api_test

import (
	"fmt"
	"testing"

	"github.com/surgeplatform/surge/api"
)

func TestParseCPU(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"250m", 250, false},
		{"1m", 1, false},
		{"0m", 0, false},
		{"1", 1000, false},
		{"2", 2000, false},
		{"0.5", 500, false},
		{".5", 500, false},
		{"5.", 5000, false},
		{"1.5", 1500, false},
		{"0.001", 1, false},
		{"1.001", 1001, false}, // 1.001*1000 is 1000.9999999999999 in float64
		{"1.003", 1003, false},
		{"2.5000", 2500, false}, // trailing zeros are not precision
		{"1.0m", 1, false},
		{"007", 7000, false},
		{"256", 256000, false},
		{"", 0, true},
		{"m", 0, true},
		{".", 0, true},
		{".m", 0, true},
		{"0.0001", 0, true}, // finer than 1m
		{"1.0005", 0, true},
		{"1.5m", 0, true},
		{"abc", 0, true},
		{"-1", 0, true},
		{"+1", 0, true},
		{"1e3", 0, true},
		{"1.2.3", 0, true},
		{" 1", 0, true},
		{"1 ", 0, true},
		{"1k", 0, true},
		{"1mm", 0, true},
		{"99999999999999999999", 0, true}, // overflows int64
		{"9223372036854775808m", 0, true},
	}
	for _, tt := range tests {
		got, err := api.ParseCPU(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestParseCPUExact checks every value from 1m to 10 cores written as
// cores, which a float64 product gets wrong for about 2% of them.
func TestParseCPUExact(t *testing.T) {
	for m := int64(1); m <= 10000; m++ {
		s := fmt.Sprintf("%d.%03d", m/1000, m%1000)
		got, err := api.ParseCPU(s)
		if err != nil || got != m {
			t.Fatalf("ParseCPU(%q) = %d, %v; want %d", s, got, err, m)
		}
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"128Mi", 128 << 20, false},
		{"1Gi", 1 << 30, false},
		{"1.5Gi", 3 << 29, false},
		{"1Ti", 1 << 40, false},
		{"2Ki", 2048, false},
		{"500M", 500e6, false},
		{"1G", 1e9, false},
		{"1T", 1e12, false},
		{"3k", 3000, false},
		{"3K", 3000, false},
		{"1048576", 1 << 20, false},
		{"0", 0, false},
		{"", 0, true},
		{"12Qi", 0, true},
		{"Mi", 0, true},
		{"-1Mi", 0, true},
		{"1e3", 0, true},
		{"abc", 0, true},
		{"1 Mi", 0, true},
		{"1mi", 0, true},
		{"1m", 0, true}, // millibytes are not a thing here
		{"99999999999Ti", 0, true},
	}
	for _, tt := range tests {
		got, err := api.ParseMemory(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatCPU(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1m"},
		{250, "250m"},
		{1000, "1"},
		{1500, "1500m"},
		{256000, "256"},
	}
	for _, tt := range tests {
		if got := api.FormatCPU(tt.in); got != tt.want {
			t.Errorf("FormatCPU(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := api.ParseCPU(tt.want); err != nil || back != tt.in {
			t.Errorf("ParseCPU(FormatCPU(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestFormatMemory(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1000"},
		{1024, "1Ki"},
		{1536, "1536"}, // 1.5Ki: not a whole number of any unit
		{3 << 10, "3Ki"},
		{128 << 20, "128Mi"},
		{1536 << 20, "1536Mi"},
		{1 << 30, "1Gi"},
		{1 << 40, "1Ti"},
		{2048 << 30, "2Ti"},
		{500e6, "500000000"},
	}
	for _, tt := range tests {
		if got := api.FormatMemory(tt.in); got != tt.want {
			t.Errorf("FormatMemory(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := api.ParseMemory(tt.want); err != nil || back != tt.in {
			t.Errorf("ParseMemory(FormatMemory(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
