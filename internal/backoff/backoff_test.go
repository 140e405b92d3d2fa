package backoff

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDelayDoublesUpToMax(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{60, time.Second},
	} {
		if got := p.Delay(tc.n); got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestDelayJitterStaysInItsShare(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(3) // 4s before jitter
		if d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("Delay(3) = %v, want within [2s, 4s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("1000 jittered delays took only %d values", len(seen))
	}
}

func TestRetryWaitsOnTheClockUntilSuccess(t *testing.T) {
	c := clock.NewFake()
	p := Policy{Base: time.Second, Max: 4 * time.Second}
	calls := 0
	done := make(chan error)
	go func() {
		done <- Retry(context.Background(), c, p, func(context.Context) error {
			calls++
			if calls < 4 {
				return errors.New("not yet")
			}
			return nil
		})
	}()
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if err := c.BlockUntilContext(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		c.Advance(wait)
	}
	if err := <-done; err != nil {
		t.Fatalf("Retry = %v, want nil", err)
	}
	if calls != 4 {
		t.Fatalf("op ran %d times, want 4", calls)
	}
}

func TestRetryStopsOnPermanentErrors(t *testing.T) {
	bad := errors.New("bad request")
	calls := 0
	err := Retry(context.Background(), clock.NewFake(), Policy{Base: time.Hour}, func(context.Context) error {
		calls++
		return Permanent(bad)
	})
	if err != bad || calls != 1 {
		t.Fatalf("Retry = %v after %d calls, want the permanent error itself after 1", err, calls)
	}
}

func TestRetryReturnsTheLastErrorWhenTheContextEnds(t *testing.T) {
	c := clock.NewFake()
	ctx, cancel := context.WithCancel(context.Background())
	flaky := errors.New("unreachable")
	done := make(chan error)
	go func() {
		done <- Retry(ctx, c, Policy{Base: time.Second}, func(context.Context) error { return flaky })
	}()
	if err := c.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != flaky {
		t.Fatalf("Retry = %v, want the op's last error", err)
	}
	if err := Retry(ctx, c, Policy{}, func(context.Context) error { t.Fatal("op ran"); return nil }); err != context.Canceled {
		t.Fatalf("Retry on an ended context = %v, want context.Canceled", err)
	}
}
