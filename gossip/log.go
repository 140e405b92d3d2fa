package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"net"
)

// newMemberlistLogger returns a *log.Logger, which memberlist needs, that
// writes to l at the level of memberlist's "[LEVEL] memberlist: " prefix.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn},
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lp := range levelPrefixes {
		if rest, ok := bytes.CutPrefix(msg, []byte(lp.prefix)); ok {
			msg, level = rest, lp.level
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	if level == slog.LevelError && bytes.Contains(msg, []byte(net.ErrClosed.Error())) {
		// memberlist's probe and gossip goroutines still send for a moment
		// after Shutdown closed this member's own sockets: that is the
		// member stopping, not a fault.
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, string(msg))
	return len(p), nil
}
