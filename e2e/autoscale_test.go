//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/closedloop"
)

// TestAutoscaleStepToZeroAndBack drives the real path — gateway, stats,
// autoscaler, controllers, agent, containerd — with a step in load, then
// silence, then one more request: more replicas under load with no failed
// request, zero when idle, and the next request served from zero.
func TestAutoscaleStepToZeroAndBack(t *testing.T) {
	requireRuntime(t)
	c := newCluster(t, "up")
	c.start()
	image := strings.TrimSpace(c.mustSurge("build", "../examples/hello", "-t", "hello:v1"))
	// One request per replica, a short window and grace so the test is quick.
	c.mustSurge("deploy", "hello", "--image", image, "--concurrency", "1", "--window", "6s", "--scale-to-zero-grace", "2s")
	cl := c.client()
	ctx := context.Background()
	scale := func() api.Scale {
		t.Helper()
		sc, err := client.Get[api.Scale](ctx, cl, api.Key{Namespace: "default", Name: "hello-00001"})
		if err != nil {
			t.Fatal(err)
		}
		return *sc
	}

	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func() error {
		req, _ := http.NewRequest("GET", "http://"+c.gateway+"/", nil)
		req.Host = "hello.surge.localhost"
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "hello from surge") {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("first request: %v", err)
	}

	// Load: clients in closed loops; the step raises them from 1 to 10.
	load := closedloop.Start(ctx, 1, get)
	time.Sleep(3 * time.Second) // one client's steady state before the step
	before := scale().Spec.Replicas
	step := time.Now()
	load.Add(9)
	var asked, ready time.Duration
	deadline := time.Now().Add(60 * time.Second)
	for (asked == 0 || ready == 0) && time.Now().Before(deadline) {
		sc := scale()
		if asked == 0 && sc.Spec.Replicas > before {
			asked = time.Since(step)
		}
		if ready == 0 && sc.Status.ReadyReplicas > before {
			ready = time.Since(step)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := load.Stop()
	if asked == 0 || ready == 0 {
		t.Fatalf("no scale-up within 60s of a 10x step (replicas before %d, now %+v)", before, scale())
	}
	t.Logf("10x step: more replicas asked after %s, ready after %s; %d requests, %d failed", asked, ready, r.OK, r.Failed)
	if r.Failed > 0 {
		t.Errorf("%d of %d requests failed under the step; first: %v", r.Failed, r.OK+r.Failed, r.FirstErr)
	}

	// Silence: after the window and the grace, zero replicas.
	deadline = time.Now().Add(90 * time.Second)
	for scale().Spec.Replicas != 0 || scale().Status.Replicas != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not at zero 90s after the load stopped: %+v", scale())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// From zero: the next request waits for a replica and is answered.
	start := time.Now()
	if err := get(); err != nil {
		t.Fatalf("request from zero: %v", err)
	}
	t.Logf("request from zero answered in %s", time.Since(start))
}
