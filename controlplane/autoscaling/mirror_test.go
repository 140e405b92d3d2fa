package autoscaling

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/store"
	"github.com/surgeplatform/surge/internal/clock"
)

// TestMirrorFollowsTheStore: the mirror reads what is there, then follows
// deploys and deletes, all four kinds of a change at once.
func TestMirrorFollowsTheStore(t *testing.T) {
	st := store.New(etcdtest.Start(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	deploy := func(name, image string) {
		t.Helper()
		f := &api.Function{Metadata: api.ObjectMeta{Name: name}, Spec: api.FunctionSpec{Image: image}}
		api.SetDefaults(&f.Spec)
		if _, err := st.PutFunction(ctx, f, store.CreateOrReplace); err != nil {
			t.Fatal(err)
		}
	}
	deploy("before", "example.test/before:v1")
	var m mirror
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	wg.Go(func() { m.run(ctx, st, clock.Real(), func(err error) { errs <- err }) })
	defer func() { cancel(); wg.Wait() }()

	// names is what the mirror holds: functions, and revisions, scales and
	// traffic, each sorted.
	names := func() [4][]string {
		in, ok := m.input()
		var out [4][]string
		if !ok {
			return out
		}
		for _, f := range in.Functions {
			out[0] = append(out[0], f.Metadata.Name)
		}
		for _, r := range in.Revisions {
			out[1] = append(out[1], r.Metadata.Name)
		}
		for _, s := range in.Scales {
			out[2] = append(out[2], s.Metadata.Name)
		}
		for _, tr := range in.Traffic {
			out[3] = append(out[3], tr.Metadata.Name)
		}
		for i := range out {
			slices.Sort(out[i])
		}
		return out
	}
	// waitFor polls the mirror, with a deadline, until it holds want.
	waitFor := func(want [4][]string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			got := names()
			if slices.Equal(got[0], want[0]) && slices.Equal(got[1], want[1]) && slices.Equal(got[2], want[2]) && slices.Equal(got[3], want[3]) {
				return
			}
			select {
			case err := <-errs:
				t.Fatalf("mirror: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("mirror holds %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor([4][]string{{"before"}, {"before-00001"}, {"before-00001"}, {"before"}})
	deploy("hello", "example.test/hello:v1")
	deploy("hello", "example.test/hello:v2")
	waitFor([4][]string{{"before", "hello"}, {"before-00001", "hello-00001", "hello-00002"},
		{"before-00001", "hello-00001", "hello-00002"}, {"before", "hello"}})
	if err := st.DeleteFunction(ctx, api.Key{Namespace: "default", Name: "before"}, ""); err != nil && !errors.Is(err, api.ErrNotFound) {
		t.Fatal(err)
	}
	waitFor([4][]string{{"hello"}, {"hello-00001", "hello-00002"}, {"hello-00001", "hello-00002"}, {"hello"}})
}
