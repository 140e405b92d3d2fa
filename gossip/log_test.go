package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestMemberlistLoggerLevels(t *testing.T) {
	var out bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, line := range []string{
		"[WARN] memberlist: Was able to connect to b over TCP but UDP probes failed",
		"[ERR] memberlist: Failed to send gossip to 127.0.0.1:1: dial tcp: connection refused",
		"[ERR] memberlist: Failed to send UDP ping: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection",
	} {
		l.Println(line)
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"level=WARN", "level=ERROR", "level=DEBUG"}
	if len(got) != len(want) {
		t.Fatalf("%d lines logged, want %d:\n%s", len(got), len(want), out.String())
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) || strings.Contains(got[i], "memberlist:") {
			t.Errorf("line %d = %q, want %s without the memberlist prefix", i, got[i], w)
		}
	}
}
