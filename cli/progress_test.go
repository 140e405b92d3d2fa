package cli

import (
	"bytes"
	"testing"
	"time"
)

// TestProgress pins both renderings of the steps: plain lines when piped,
// a redrawn line with a spinner and a check mark on a terminal.
func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		tty  bool
		want string
	}{
		{false, "built . (50ms)\nwaiting: replica a: Starting\nwaiting: replica a: pulling\n"},
		{true, "\r\033[K⠋ building .\r\033[K✓ built . (50ms)\n" +
			"\r\033[K⠋ waiting\r\033[K⠋ waiting: replica a: Starting\r\033[K⠋ waiting: replica a: pulling\r\033[K"},
	} {
		now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		clock := func() time.Time { now = now.Add(50 * time.Millisecond); return now }
		var b bytes.Buffer
		p := newProgress(&b, clock, tc.tty)
		p.period = time.Hour // no frame turns while the test runs
		p.start("building .")
		p.end("built .")
		p.start("waiting")
		p.note("replica a: Starting")
		p.note("replica a: Starting") // said once
		p.note("replica a: pulling")
		p.fail()
		if b.String() != tc.want {
			t.Errorf("tty %v:\n got %q\nwant %q", tc.tty, b.String(), tc.want)
		}
	}
	for d, want := range map[time.Duration]string{850 * time.Millisecond: "850ms", 1234 * time.Millisecond: "1.2s", 65 * time.Second: "1m5s"} {
		if got := roundDuration(d); got != want {
			t.Errorf("roundDuration(%s) = %s, want %s", d, got, want)
		}
	}
}
