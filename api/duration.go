package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// Duration is a span of time in an object, written on the wire as Go
// writes durations: "30s", "1m30s", "250ms". It is parsed once, when the
// object is decoded: a bad value fails the decode with the field named
// (see DurationError), and code that reads a spec uses the time.Duration.
// The zero Duration is written as nothing (use omitzero) and means "the
// default" wherever a field documents one.
type Duration struct {
	time.Duration
}

// Seconds returns d as a Duration (a convenience for literals in tests
// and defaults).
func Seconds(s float64) Duration { return Duration{time.Duration(s * float64(time.Second))} }

// String writes d in its shortest form: "5m", "1h30m", "90ms", "" for 0.
func (d Duration) String() string {
	if d.Duration == 0 {
		return ""
	}
	s := d.Duration.String()
	// time.Duration writes 5m as "5m0s" and 1h as "1h0m0s": drop the
	// zero units that follow a larger one.
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string; "" is zero. Anything else fails
// with a *json.UnmarshalTypeError, which encoding/json completes with the
// field's path and the API server turns into a 400 naming the field.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: durationType}
	}
	if s == "" {
		d.Duration = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: "string " + string(b), Type: durationType}
	}
	d.Duration = v
	return nil
}

// DurationRule is the sentence that explains a valid duration, for error
// messages.
const DurationRule = `must be a duration: a number with a unit, like "30s" or "2m"`

// IsDurationError reports whether a decode error is a bad Duration, and
// the field it names.
func IsDurationError(err error) (field string, ok bool) {
	te, ok := err.(*json.UnmarshalTypeError)
	if !ok || te.Type != durationType {
		return "", false
	}
	return te.Field, true
}

var durationType = reflect.TypeFor[Duration]()

// jsonKind names the JSON type of a raw value, for errors.
func jsonKind(b []byte) string {
	switch {
	case len(b) == 0:
		return "nothing"
	case b[0] == '{':
		return "object"
	case b[0] == '[':
		return "array"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	case b[0] == 'n':
		return "null"
	default:
		return "number"
	}
}
