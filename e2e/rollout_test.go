//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/e2e/harness"
	"github.com/surgeplatform/surge/internal/closedloop"
)

// The Deploy CLI II issue's end-to-end tests: canaries that reach all of
// the traffic, or roll themselves back for errors or latency, on the
// server, whatever becomes of the CLI or of the controllers' leader; tag
// hosts; a rollback to a revision at zero.

// rolloutOf reads function fn's rollout; nil when it has none or the API
// does not answer.
func rolloutOf(cl *client.Client, fn string) *api.Rollout {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ro, err := client.Get[api.Rollout](ctx, cl, api.Key{Namespace: api.DefaultNamespace, Name: fn})
	if err != nil {
		return nil
	}
	return ro
}

// sharesOf is fn's traffic split, e.g. map[ro-00002:100]; nil when it
// cannot be read.
func sharesOf(cl *client.Client, fn string) map[string]int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := client.Get[api.Traffic](ctx, cl, api.Key{Namespace: api.DefaultNamespace, Name: fn})
	if err != nil {
		return nil
	}
	return api.SharesOf(tr)
}

// allOn reports whether all of fn's traffic is on rev.
func allOn(cl *client.Client, fn, rev string) bool {
	s := sharesOf(cl, fn)
	return len(s) == 1 && s[rev] == 100
}

// hostGetter returns a request through the gateway at addr for host: an
// error for anything but a 200.
func hostGetter(addr, host string) (func() error, func()) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}, hc.CloseIdleConnections
}

// TestRollouts deploys the sleep example and rolls out revisions of it by
// canary under a steady load: a healthy one reaches all the traffic on its
// own; one that answers 500 is rolled back by itself at once, and one that
// is only slower at its step's end, each with the reason shown; a canary
// whose CLI is killed goes on and finishes. Then tag hosts, and a rollback
// to a revision the autoscaler had scaled to zero.
func TestRollouts(t *testing.T) {
	requireRuntime(t)
	c := newClusterOn(t, "up", "surge-ro", "10.248.0.0/16")
	c.start()
	cl := c.client()
	c.mustSurge("deploy", "ro", "../examples/sleep", "--min-scale", "1")
	get, closeIdle := hostGetter(c.gateway, "ro.surge.localhost")
	defer closeIdle()
	waitUntil(t, "ro answering", time.Minute, func() bool { return get() == nil })
	load := closedloop.Start(context.Background(), 8, get)
	stopped := false
	stop := func() closedloop.Result {
		stopped = true
		return load.Stop()
	}
	defer func() {
		if !stopped {
			load.Stop()
		}
	}()
	// Each test's canary: 10%, 50%, all of it, every 4s.
	canary := []string{"--canary", "10,50,100", "--step", "4s"}

	t.Run("healthy canary reaches 100%", func(t *testing.T) {
		start := time.Now()
		out, errOut, code := c.surge(append([]string{"deploy", "ro", "--env", "V=2"}, canary...)...)
		took := time.Since(start)
		if code != 0 || !strings.Contains(out, `revision ro-00002 takes all traffic`) {
			t.Fatalf("deploy: exit %d\n%s%s", code, out, errOut)
		}
		for _, want := range []string{"canary 10,50,100 every 4s from ro-00001", "Progressing: 10% of the traffic", "Progressing: 50% of the traffic", "Succeeded"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("deploy did not show %q:\n%s", want, errOut)
			}
		}
		ro := rolloutOf(cl, "ro")
		if ro == nil || ro.Status.Phase != api.RolloutSucceeded || ro.Status.Analysis == nil || ro.Status.Analysis.Canary.Requests == 0 {
			t.Fatalf("rollout %+v, want succeeded on evidence", ro)
		}
		if !allOn(cl, "ro", "ro-00002") {
			t.Errorf("traffic %v, want all on ro-00002", sharesOf(cl, "ro"))
		}
		report(t, "canary 10,50,100 every 4s of a healthy revision: all the traffic after %s; last step judged on %d requests of it (%d errors, p99 %s) and %d of the old (p99 %s)",
			took.Round(100*time.Millisecond), ro.Status.Analysis.Canary.Requests, ro.Status.Analysis.Canary.Errors, ro.Status.Analysis.Canary.P99,
			ro.Status.Analysis.Baseline.Requests, ro.Status.Analysis.Baseline.P99)
	})

	t.Run("a revision that answers 500 is rolled back", func(t *testing.T) {
		start := time.Now()
		out, errOut, code := c.surge("deploy", "ro", "--env", "STATUS=500")
		took := time.Since(start)
		if code != 1 || !strings.Contains(errOut, `surge: function "ro": ro-00003 was rolled back: error rate`) ||
			!strings.Contains(errOut, "all the traffic is on ro-00002") {
			t.Fatalf("deploy of a revision that answers 500: exit %d\n%s%s", code, out, errOut)
		}
		status := c.mustSurge("rollout", "status", "ro")
		for _, want := range []string{"RolledBack: all the traffic back on ro-00002", "Reason:", "error rate 100.0%"} {
			if !strings.Contains(status, want) {
				t.Errorf("rollout status lacks %q:\n%s", want, status)
			}
		}
		if !allOn(cl, "ro", "ro-00002") {
			t.Errorf("traffic %v, want all back on ro-00002", sharesOf(cl, "ro"))
		}
		ro := rolloutOf(cl, "ro")
		report(t, "canary of a revision that answers 500: rolled back at %d%% after %s: %s", ro.Status.Percent, took.Round(100*time.Millisecond), ro.Status.Reason)
	})

	t.Run("a revision that is only slower is rolled back", func(t *testing.T) {
		out, errOut, code := c.surge("deploy", "ro", "--env", "STATUS-", "--env", "SLEEP_MS=800")
		if code != 1 || !strings.Contains(errOut, `surge: function "ro": ro-00004 was rolled back: p99 latency`) {
			t.Fatalf("deploy of a slower revision: exit %d\n%s%s", code, out, errOut)
		}
		ro := rolloutOf(cl, "ro")
		if ro == nil || ro.Status.Phase != api.RolloutRolledBack || ro.Status.Analysis == nil || ro.Status.Analysis.Canary.Errors != 0 {
			t.Fatalf("rollout %+v, want rolled back with no error seen", ro)
		}
		if status := c.mustSurge("rollout", "status", "ro"); !strings.Contains(status, "p99 latency") {
			t.Errorf("rollout status does not say why:\n%s", status)
		}
		if !allOn(cl, "ro", "ro-00002") {
			t.Errorf("traffic %v, want all back on ro-00002", sharesOf(cl, "ro"))
		}
		report(t, "canary of a revision 800ms slower, with no errors: rolled back at its first step's end: %s", ro.Status.Reason)
	})

	t.Run("the CLI killed mid-rollout", func(t *testing.T) {
		cmd := exec.Command(surgeBin, append([]string{"deploy", "ro", "--env", "SLEEP_MS-", "--env", "V=5"}, canary...)...)
		cmd.Env = append(os.Environ(), "SURGE_CONFIG="+c.config)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "ro-00005's canary in progress", time.Minute, func() bool {
			ro := rolloutOf(cl, "ro")
			return ro != nil && ro.Spec.Revision == "ro-00005" && ro.Status.Phase == api.RolloutProgressing
		})
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		killedAt := rolloutOf(cl, "ro")
		if killedAt == nil || killedAt.Status.Phase != api.RolloutProgressing {
			t.Fatalf("the canary ended before the CLI was killed: %+v", killedAt)
		}
		took := waitUntil(t, "ro-00005's canary to succeed without its CLI", time.Minute, func() bool {
			ro := rolloutOf(cl, "ro")
			return ro != nil && ro.Spec.Revision == "ro-00005" && ro.Status.Phase.Done()
		})
		if ro := rolloutOf(cl, "ro"); ro.Status.Phase != api.RolloutSucceeded || !allOn(cl, "ro", "ro-00005") {
			t.Fatalf("rollout %s (%s), traffic %v; want all on ro-00005", ro.Status.Phase, ro.Status.Reason, sharesOf(cl, "ro"))
		}
		report(t, "canary whose CLI was SIGKILLed at %d%%: all the traffic on it %s later", killedAt.Status.Percent, took.Round(100*time.Millisecond))
	})

	res := stop()
	// The revisions that answered 500 failed their share of requests
	// until they were rolled back; nothing else did.
	t.Logf("load through the rollouts: %d requests, %d failed (first: %s)", res.OK+res.Failed, res.Failed, res.FirstErr)
	if res.OK == 0 {
		t.Errorf("no request succeeded during the rollouts")
	}

	t.Run("tags and a rollback from zero", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(c.gateway)
		c.mustSurge("deploy", "tg", "../examples/hello")
		c.mustSurge("deploy", "tg", "--env", "X=2")
		if !allOn(cl, "tg", "tg-00002") {
			t.Fatalf("traffic %v, want all on tg-00002", sharesOf(cl, "tg"))
		}
		// tg-00001 has no traffic and no tag: the autoscaler takes it to
		// zero.
		waitUntil(t, "tg-00001 at zero replicas", time.Minute, func() bool { return replicasOf(t, cl, "tg", "tg-00001") == 0 })

		start := time.Now()
		out, errOut, code := c.surge("rollback", "tg")
		if code != 0 || !strings.Contains(out, `function "tg" rolled back: tg-00001 takes all traffic (it was on tg-00002)`) ||
			!strings.Contains(errOut, "tg-00001 is Ready") {
			t.Fatalf("rollback: exit %d\n%s%s", code, out, errOut)
		}
		took := time.Since(start)
		url := "http://tg.surge.localhost:" + port
		if body := getBody(t, url); !strings.Contains(body, "host: tg-00001-") {
			t.Errorf("after the rollback tg answers from %q, want a replica of tg-00001", body)
		}
		report(t, "rollback to a revision at zero replicas: Ready and all the traffic on it after %s", took.Round(100*time.Millisecond))

		// A tag gives tg-00002, which has no traffic now, a host of its own.
		out = c.mustSurge("tag", "tg", "tg-00002", "next")
		tagURL := "http://next-tg.surge.localhost:" + port
		if lastLine(out) != tagURL {
			t.Errorf("tag printed %q last, want %s", lastLine(out), tagURL)
		}
		for range 5 {
			if body := getBody(t, tagURL); !strings.Contains(body, "host: tg-00002-") {
				t.Fatalf("%s answered from %q, want tg-00002", tagURL, body)
			}
			if body := getBody(t, url); !strings.Contains(body, "host: tg-00001-") {
				t.Fatalf("%s answered from %q, want tg-00001", url, body)
			}
		}
		if rev := c.mustSurge("revisions", "tg"); !strings.Contains(rev, "next") {
			t.Errorf("revisions does not show the tag:\n%s", rev)
		}
		c.mustSurge("untag", "tg", "next")
		waitUntil(t, "next-tg gone from the gateway", 30*time.Second, func() bool {
			resp, err := loopback().Get(tagURL)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusNotFound
		})
	})
}

// replicasOf counts fn's replicas of revision rev, -1 when the API does
// not answer.
func replicasOf(t *testing.T, cl *client.Client, fn, rev string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reps, err := client.List[api.Replica](ctx, cl, api.DefaultNamespace, map[string][]string{"function": {fn}})
	if err != nil {
		return -1
	}
	n := 0
	for _, r := range reps.Items {
		if r.Spec.Revision == rev {
			n++
		}
	}
	return n
}

// TestRolloutLeaderChange: on three servers, the controllers' leader is
// SIGKILLed while a canary is at its first step; the new leader carries
// the canary on to all of the traffic.
func TestRolloutLeaderChange(t *testing.T) {
	requireRuntime(t)
	dir, err := os.MkdirTemp("", "sh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := harness.Start(t, harness.Options{
		Bin: surgeBin, README: "../README.md", Dir: dir,
		Servers: 3, Agents: 1, Gateways: 1,
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, errOut, _ := c.Surge("rollout", "status", "lc")
			t.Logf("on failure:\n%s%s\n%s", out, errOut, c.Logs(60))
		}
	})
	cl := c.Client()
	image := strings.TrimSpace(c.MustSurge("build", "../examples/hello", "-t", "hello:v1"))
	c.MustSurge("deploy", "lc", "--image", image, "--min-scale", "1")
	get, closeIdle := hostGetter(c.GatewayAddr(0), "lc.surge.localhost")
	defer closeIdle()
	waitUntil(t, "lc answering", time.Minute, func() bool { return get() == nil })
	load := closedloop.Start(context.Background(), 4, get)
	defer load.Stop()

	c.MustSurge("deploy", "lc", "--env", "X=2", "--canary", "10,50,100", "--step", "6s", "--no-wait")
	waitUntil(t, "lc-00002's canary at its first step", time.Minute, func() bool {
		ro := rolloutOf(cl, "lc")
		return ro != nil && ro.Spec.Revision == "lc-00002" && ro.Status.Phase == api.RolloutProgressing
	})
	st, err := c.ClusterStatus()
	if err != nil || st.Leader == "" {
		t.Fatalf("cluster status: %+v, %v", st, err)
	}
	i := -1
	for j, p := range c.Servers {
		if p.Host.Name == st.Leader {
			i = j
		}
	}
	if i < 0 {
		t.Fatalf("no server %q", st.Leader)
	}
	victim := c.Servers[i]
	if err := victim.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	killedAt := rolloutOf(cl, "lc")
	took := waitUntil(t, "lc-00002's canary to end under a new leader", 2*time.Minute, func() bool {
		ro := rolloutOf(cl, "lc")
		return ro != nil && ro.Spec.Revision == "lc-00002" && ro.Status.Phase.Done()
	})
	newLeader := ""
	if s, err := c.ClusterStatus(); err == nil {
		newLeader = s.Leader
	}
	if ro := rolloutOf(cl, "lc"); ro == nil || ro.Status.Phase != api.RolloutSucceeded || !allOn(cl, "lc", "lc-00002") {
		t.Fatalf("rollout %+v, traffic %v; want all on lc-00002", ro, sharesOf(cl, "lc"))
	}
	if newLeader == "" || newLeader == st.Leader {
		t.Errorf("controllers' leader after the kill: %q, want another than %s", newLeader, st.Leader)
	}
	pct := int32(-1)
	if killedAt != nil {
		pct = killedAt.Status.Percent
	}
	report(t, "canary with the controllers' leader %s SIGKILLed at %d%%: %s carried it on, all the traffic on it %s later",
		st.Leader, pct, newLeader, took.Round(100*time.Millisecond))
}
