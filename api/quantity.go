package api

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseCPU reads a CPU quantity in the Kubernetes notation ("250m", "1",
// "0.5") and returns millicores. It works on the decimal digits rather than
// a float64, so that every value a user can write in millicores is exact:
// 1.001 * 1000 in binary floating point is 1000.9999999999999.
func ParseCPU(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("cpu quantity is empty")
	}
	num, shift := s, 3 // cores: move the point three places right
	if n, ok := strings.CutSuffix(s, "m"); ok {
		num, shift = n, 0
	}
	if _, err := parseNonNegative(num); err != nil {
		return 0, fmt.Errorf("cpu quantity %q: want cores like \"0.5\" or millicores like \"250m\"", s)
	}
	whole, frac, _ := strings.Cut(num, ".")
	if len(frac) < shift {
		frac += strings.Repeat("0", shift-len(frac))
	}
	digits, rest := whole+frac[:shift], frac[shift:]
	if strings.Trim(rest, "0") != "" {
		return 0, fmt.Errorf("cpu quantity %q: finer than one millicore", s)
	}
	if digits == "" {
		digits = "0"
	}
	m, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cpu quantity %q is too large", s)
	}
	return m, nil
}

// memorySuffixes maps a quantity suffix to its multiplier, binary first.
var memorySuffixes = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseMemory reads a memory quantity in the Kubernetes notation ("128Mi",
// "1Gi", "500M", "1048576") and returns bytes.
func ParseMemory(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("memory quantity is empty")
	}
	num, mult := s, 1.0
	for _, ms := range memorySuffixes {
		if strings.HasSuffix(s, ms.suffix) {
			num, mult = strings.TrimSuffix(s, ms.suffix), ms.mult
			break
		}
	}
	v, err := parseNonNegative(num)
	if err != nil {
		return 0, fmt.Errorf("memory quantity %q: want bytes with an optional suffix like \"128Mi\" or \"1Gi\"", s)
	}
	b := v * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("memory quantity %q is too large", s)
	}
	return int64(b), nil
}

// parseNonNegative parses a plain decimal number: digits with at most one
// point, no sign, no exponent, no spaces.
func parseNonNegative(s string) (float64, error) {
	if s == "" || strings.Trim(s, "0123456789.") != "" || strings.Count(s, ".") > 1 || s == "." {
		return 0, fmt.Errorf("not a decimal number: %q", s)
	}
	return strconv.ParseFloat(s, 64)
}

// FormatMemory writes bytes in the largest binary unit that divides them.
func FormatMemory(b int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b >= u.v && b%u.v == 0 {
			return strconv.FormatInt(b/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(b, 10)
}

// FormatCPU writes millicores as "250m", or whole cores as "2".
func FormatCPU(m int64) string {
	if m%1000 == 0 {
		return strconv.FormatInt(m/1000, 10)
	}
	return strconv.FormatInt(m, 10) + "m"
}
