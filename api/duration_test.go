package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDurationRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		out  string
	}{
		{`""`, 0, `""`},
		{`"30s"`, 30 * time.Second, `"30s"`},
		{`"5m"`, 5 * time.Minute, `"5m"`},
		{`"300s"`, 5 * time.Minute, `"5m"`},
		{`"1h"`, time.Hour, `"1h"`},
		{`"1h30m"`, 90 * time.Minute, `"1h30m"`},
		{`"1m30s"`, 90 * time.Second, `"1m30s"`},
		{`"250ms"`, 250 * time.Millisecond, `"250ms"`},
	} {
		var d Duration
		if err := json.Unmarshal([]byte(tc.in), &d); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if d.Duration != tc.want {
			t.Errorf("%s = %v, want %v", tc.in, d.Duration, tc.want)
		}
		b, err := json.Marshal(d)
		if err != nil || string(b) != tc.out {
			t.Errorf("marshal %s = %s, %v; want %s", tc.in, b, err, tc.out)
		}
	}
}

func TestDurationErrorNamesTheField(t *testing.T) {
	var f struct {
		Spec struct {
			Port    int32 `json:"port"`
			Scaling struct {
				StableWindow Duration `json:"stableWindow"`
			} `json:"scaling"`
		} `json:"spec"`
	}
	for _, body := range []string{
		`{"spec":{"scaling":{"stableWindow":"3x"}}}`,
		`{"spec":{"scaling":{"stableWindow":30}}}`,
	} {
		err := json.Unmarshal([]byte(body), &f)
		field, ok := IsDurationError(err)
		if !ok || field != "spec.scaling.stableWindow" {
			t.Errorf("%s: err %v; IsDurationError = %q, %v; want the field", body, err, field, ok)
		}
	}
	err := json.Unmarshal([]byte(`{"spec":{"port":"x"}}`), &f)
	if _, ok := IsDurationError(err); ok {
		t.Errorf("a bad port reads as a bad duration: %v", err)
	}
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || !strings.Contains(te.Field, "port") {
		t.Errorf("bad port: %v", err)
	}
}
