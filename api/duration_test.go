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

// TestSpecDurationErrorsNameTheField decodes objects with a bad duration
// in each duration field: the error names the field, for the API server's
// 400.
func TestSpecDurationErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		body, field string
		into        any
	}{
		{`{"spec":{"timeout":"abc"}}`, "spec.timeout", &Function{}},
		{`{"spec":{"timeout":"30"}}`, "spec.timeout", &Function{}},
		{`{"spec":{"timeout":30}}`, "spec.timeout", &Function{}},
		{`{"spec":{"readiness":{"period":"soon"}}}`, "spec.readiness.period", &Function{}},
		{`{"spec":{"scaling":{"scaleToZeroGrace":"x"}}}`, "spec.scaling.scaleToZeroGrace", &Function{}},
		{`{"spec":{"scaling":{"stableWindow":true}}}`, "spec.scaling.stableWindow", &Function{}},
		{`{"spec":{"template":{"timeout":"1 minute"}}}`, "spec.template.timeout", &Revision{}},
		{`{"window":"1"}`, "window", &GatewayStats{}},
	} {
		err := json.Unmarshal([]byte(tc.body), tc.into)
		field, ok := IsDurationError(err)
		if !ok || field != tc.field {
			t.Errorf("%s: err %v; IsDurationError = %q, %v; want %q", tc.body, err, field, ok, tc.field)
		}
	}
}

// TestDecodesWhatWasStoredBefore reads objects as the API wrote them when
// their durations were strings: "" and "5m" alike still decode, and
// writing them again keeps their form (an empty one is left out).
func TestDecodesWhatWasStoredBefore(t *testing.T) {
	const stored = `{"kind":"Function","metadata":{"name":"hello","namespace":"default"},` +
		`"spec":{"image":"example.test/hello:v1","timeout":"5m","readiness":{"path":"/ready","period":""},` +
		`"scaling":{"metric":"concurrency","scaleToZeroGrace":"30s","stableWindow":""}}}`
	var f Function
	if err := json.Unmarshal([]byte(stored), &f); err != nil {
		t.Fatal(err)
	}
	s := f.Spec
	if s.Timeout.Duration != 5*time.Minute || s.Readiness.Period.Duration != 0 ||
		s.Scaling.ScaleToZeroGrace.Duration != 30*time.Second || s.Scaling.StableWindow.Duration != 0 {
		t.Errorf("decoded spec %+v, want timeout 5m, grace 30s and the empty ones zero", s)
	}
	b, err := json.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"kind":"Function","metadata":{"name":"hello","namespace":"default"},` +
		`"spec":{"image":"example.test/hello:v1","timeout":"5m","readiness":{"path":"/ready"},` +
		`"scaling":{"metric":"concurrency","scaleToZeroGrace":"30s"}}}`
	if string(b) != want {
		t.Errorf("encoded again:\n%s\nwant\n%s", b, want)
	}

	var gs GatewayStats
	if err := json.Unmarshal([]byte(`{"gateway":"gw-1","window":"1s","at":"2025-01-01T00:00:00Z","revisions":[]}`), &gs); err != nil {
		t.Fatal(err)
	}
	if gs.Window.Duration != time.Second {
		t.Errorf("gateway stats window %v, want 1s", gs.Window)
	}
	if err := json.Unmarshal([]byte(`{"gateway":"gw-1","window":"","revisions":[]}`), &gs); err != nil || gs.Window.Duration != 0 {
		t.Errorf("an empty window: %v, %v; want zero", gs.Window, err)
	}
}
