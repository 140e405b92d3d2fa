// Package wait has the one helper the agent's loops share for pausing:
// a sleep that a context cuts short.
package wait

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends, and reports whether d passed (false
// when ctx ended first). A d of zero or less does not wait.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
