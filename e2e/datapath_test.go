//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/e2e/harness"
)

// TestDataPathUnderBursts runs "Data path under bursts" through `surge up`
// as a user would: 500 concurrent requests to a function at zero are all
// answered 200, and the gateway asks for the replicas they need at once
// (500 at 100 per replica: 5), not one; and a replica SIGKILLed under a
// load of GETs fails none of them.
func TestDataPathUnderBursts(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	// The bursts' connections all come from this machine: no per-address cap.
	c.flags = append(c.flags, "--max-conns-per-ip", "0")
	c.start()
	image := strings.TrimSpace(c.mustSurge("build", "../examples/hello", "-t", "hello:v1"))
	cl := c.client()
	ctx := context.Background()

	t.Run("burst from zero", func(t *testing.T) {
		c.mustSurge("deploy", "burst", "--image", image, "--scale-to-zero-grace", "1s", "--window", "6s")
		key := api.Key{Namespace: "default", Name: "burst-00001"}
		waitFor(t, "burst at zero", 2*time.Minute, func() bool {
			sc, err := client.Get[api.Scale](ctx, cl, key)
			reps, lerr := client.List[api.Replica](ctx, cl, "default", nil)
			if err != nil || lerr != nil || sc.Spec.Replicas != 0 {
				return false
			}
			for _, r := range reps.Items {
				if r.Spec.Function == "burst" {
					return false
				}
			}
			return true
		})

		// The most replicas asked while the burst is served.
		var asked int32
		watch, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for watch.Err() == nil {
				if sc, err := client.Get[api.Scale](watch, cl, key); err == nil {
					asked = max(asked, sc.Spec.Replicas)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})

		const n = 500
		hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
		defer hc.CloseIdleConnections()
		var mu sync.Mutex
		codes := map[int]int{}
		var reqs sync.WaitGroup
		start := time.Now()
		for range n {
			reqs.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+c.gateway+"/", nil)
				req.Host = "burst.surge.localhost"
				code := 0
				if resp, err := hc.Do(req); err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			})
		}
		reqs.Wait()
		took := time.Since(start)
		stop()
		wg.Wait()
		t.Logf("%d concurrent requests to a function at zero: codes %v in %s; up to %d replicas asked", n, codes, took.Round(time.Millisecond), asked)
		if codes[200] != n {
			t.Errorf("%d of %d answered 200: %v", codes[200], n, codes)
		}
		if asked < 5 {
			t.Errorf("up to %d replicas asked for %d requests at 100 per replica, want 5", asked, n)
		}
	})

	t.Run("replica killed under load", func(t *testing.T) {
		c.mustSurge("deploy", "victim", "--image", image, "--min-scale", "2")
		var reps []api.Replica
		waitFor(t, "2 Ready replicas", 2*time.Minute, func() bool {
			reps = readyReplicasOf(ctx, cl, "victim")
			return len(reps) == 2
		})
		l := harness.StartLoad(harness.LoadOptions{Targets: []string{c.gateway}, Host: "victim.surge.localhost", Clients: 8, Duration: 12 * time.Second})
		time.Sleep(3 * time.Second) // load flows before the kill
		pids := functionPIDs(t, reps[:1])
		if len(pids) != 1 {
			t.Fatalf("replica %s: want its one process, found %v", reps[0].Metadata.Name, pids)
		}
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "2 Ready replicas after the kill", time.Minute, func() bool {
			r := readyReplicasOf(ctx, cl, "victim")
			return len(r) == 2 && !slices.Contains(functionPIDs(t, r), pids[0])
		})
		res := l.Wait()
		t.Logf("a replica SIGKILLed under 8 clients of GETs: %d requests, %d failed", len(res), len(res.Failed()))
		if f := res.Failed(); len(f) > 0 {
			t.Errorf("%d of %d GETs failed: %s", len(f), len(res), res.Errors())
		}
	})
}

// readyReplicasOf lists fn's Ready replicas.
func readyReplicasOf(ctx context.Context, cl *client.Client, fn string) []api.Replica {
	list, err := client.List[api.Replica](ctx, cl, "default", nil)
	if err != nil {
		return nil
	}
	var out []api.Replica
	for _, r := range list.Items {
		if r.Spec.Function == fn && r.Status.Phase == api.ReplicaReady {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond every 50ms, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
