package controlplane_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// recorder collects watch events.
type recorder struct {
	mu     sync.Mutex
	events []string
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 100)} }

func (r *recorder) add(e api.WatchEvent[*api.Function]) error {
	r.mu.Lock()
	r.events = append(r.events, e.Type+" "+e.Object.Metadata.Name)
	r.mu.Unlock()
	r.notify <- struct{}{}
	return nil
}

func (r *recorder) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		got := append([]string(nil), r.events...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("waited 30s for %d events, have %v", n, got)
		}
	}
}

func TestWatchResumesAcrossServerRestart(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	list, err := client.List[api.Function](ctx, c, "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	done := make(chan error, 1)
	go func() {
		done <- client.Watch[api.Function](ctx, c, "default",
			client.WatchOptions{ResourceVersion: list.ResourceVersion, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond},
			rec.add)
	}()

	if _, err := c.PutFunction(ctx, hello("example.test/hello:v1")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 1)

	in.Stop()
	in.Restart()
	c2 := in.Client()
	f := hello("example.test/hello:v1")
	f.Metadata.Name = "after"
	if _, err := c2.PutFunction(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := client.Delete[api.Function](ctx, c2, api.Key{Namespace: "default", Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	got := rec.waitFor(t, 3)
	want := []string{"ADDED hello", "ADDED after", "DELETED hello"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v (each once, in order)", got, want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("watch ended with %v, want context.Canceled", err)
	}
}

func TestWatchFromCompactedVersionIsGone(t *testing.T) {
	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	first, err := c.PutFunction(ctx, hello("example.test/hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	last, err := c.PutFunction(ctx, hello("example.test/hello:v2"))
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := strconv.ParseInt(last.Metadata.ResourceVersion, 10, 64)
	if _, err := in.Store().Client().Compact(ctx, rev); err != nil {
		t.Fatalf("compact: %v", err)
	}
	before, _ := strconv.ParseInt(first.Metadata.ResourceVersion, 10, 64)
	err = client.Watch[api.Function](ctx, c, "default",
		client.WatchOptions{ResourceVersion: strconv.FormatInt(before-1, 10)},
		func(api.WatchEvent[*api.Function]) error { return nil })
	var ae *api.Error
	if !errors.Is(err, api.ErrGone) || !errors.As(err, &ae) || ae.Code != 410 {
		t.Fatalf("watch from a compacted version: got %v, want 410 Gone", err)
	}
	if ae.Message == "" {
		t.Error("410 has no message telling the client what to do")
	}

	// From the current version, the same watch works.
	ctx2, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan string, 1)
	go func() {
		_ = client.Watch[api.Function](ctx2, c, "default", client.WatchOptions{ResourceVersion: last.Metadata.ResourceVersion},
			func(e api.WatchEvent[*api.Function]) error {
				got <- e.Type + " " + e.Object.Spec.Image
				return errors.New("stop")
			})
	}()
	if _, err := c.PutFunction(ctx, hello("example.test/hello:v3")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e != "MODIFIED example.test/hello:v3" {
			t.Errorf("event %q", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event from a current watch")
	}
}
