package clock

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSleepWaitsForTheClock(t *testing.T) {
	c := NewFake()
	done := make(chan bool)
	go func() { done <- Sleep(context.Background(), c, time.Minute) }()
	if err := c.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	c.Advance(59 * time.Second)
	select {
	case <-done:
		t.Fatal("Sleep returned before its minute passed")
	default:
	}
	c.Advance(time.Second)
	if !<-done {
		t.Fatal("Sleep reported that its context ended")
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	c := NewFake()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- Sleep(ctx, c, time.Hour) }()
	if err := c.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if <-done {
		t.Fatal("Sleep reported its hour passed")
	}
}

func TestSleepWithoutDuration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, NewFake(), 0) {
		t.Fatal("a zero sleep with a live context reported false")
	}
	cancel()
	if Sleep(ctx, NewFake(), -time.Second) {
		t.Fatal("a sleep with an ended context reported true")
	}
}

func TestWithTimeoutFollowsTheFake(t *testing.T) {
	c := NewFake()
	ctx, cancel := WithTimeout(context.Background(), c, 10*time.Second)
	defer cancel()
	c.Advance(9 * time.Second)
	if ctx.Err() != nil {
		t.Fatal("context ended early")
	}
	c.Advance(time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("context did not end once the fake passed its deadline")
	}
	if ctx.Err() != context.DeadlineExceeded {
		t.Fatalf("err = %v, want deadline exceeded", ctx.Err())
	}
	if d, ok := ctx.Deadline(); !ok || !d.Equal(Epoch.Add(10*time.Second)) {
		t.Fatalf("Deadline() = %v, %v; want %v", d, ok, Epoch.Add(10*time.Second))
	}
}

func TestWithTimeoutCancelled(t *testing.T) {
	c := NewFake()
	ctx, cancel := WithTimeout(context.Background(), c, time.Second)
	cancel()
	<-ctx.Done()
	if ctx.Err() != context.Canceled {
		t.Fatalf("err = %v, want canceled", ctx.Err())
	}
}

func TestOr(t *testing.T) {
	if Or(nil) != Real() {
		t.Fatal("Or(nil) is not the wall clock")
	}
	f := NewFake()
	if Or(f) != Clock(f) {
		t.Fatal("Or(fake) is not the fake")
	}
	if !f.Now().Equal(Epoch) {
		t.Fatalf("NewFake reads %v, want %v", f.Now(), Epoch)
	}
}
