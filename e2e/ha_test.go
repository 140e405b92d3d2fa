//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/e2e/harness"
	"github.com/surgeplatform/surge/internal/closedloop"
)

// TestHAScenarios runs the control plane's fault scenarios on one cluster
// of three servers (the README's first server and two that join it), two
// agents and one gateway: R6 (the etcd leader killed under writes), R7 (the
// controllers' leader killed at a load step) and R16 (an image outlives the
// server it was pushed to). Each prints one line with its figures and
// fails on its criterion.
func TestHAScenarios(t *testing.T) {
	requireRuntime(t)
	dir, err := os.MkdirTemp("", "sh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := harness.Start(t, harness.Options{
		Bin: surgeBin, README: "../README.md", Dir: dir,
		Servers: 3, Agents: 2, Gateways: 1,
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, errOut, _ := c.Surge("describe", "r7")
			t.Logf("on failure:\n%s%s\n%s", out, errOut, c.Logs(60))
		}
	})
	h := &ha{c: c}
	t.Run("R6", h.r6KillEtcdLeader)
	t.Run("R7", h.r7KillControllersLeader)
	t.Run("R16", h.r16ImageOutlivesItsServer)
}

type ha struct {
	c *harness.Cluster
}

// status polls GET /v1/cluster until cond holds, failing after timeout.
func (h *ha) status(t *testing.T, what string, timeout time.Duration, cond func(*api.ClusterStatus) bool) *api.ClusterStatus {
	t.Helper()
	var st *api.ClusterStatus
	waitUntil(t, what, timeout, func() bool {
		var err error
		st, err = h.c.ClusterStatus()
		return err == nil && cond(st)
	})
	return st
}

// serving reports whether server i answers /readyz: its API is up and its
// etcd member reads through the quorum.
func (h *ha) serving(i int) bool {
	req, _ := http.NewRequest(http.MethodGet, h.c.ServerURL(i)+"/readyz", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := h.c.Client().Transport().RoundTrip(req.WithContext(ctx))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// indexOf is the index of the server named name.
func (h *ha) indexOf(t *testing.T, name string) int {
	t.Helper()
	for i, p := range h.c.Servers {
		if p.Host.Name == name {
			return i
		}
	}
	t.Fatalf("no server %q", name)
	return -1
}

// restart starts a killed server again and waits until it serves.
func (h *ha) restart(t *testing.T, i int) time.Duration {
	t.Helper()
	start := time.Now()
	if err := h.c.Servers[i].Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, h.c.Servers[i].Name+" serving again", time.Minute, func() bool { return h.serving(i) })
	return time.Since(start)
}

// r6Writes is how many writes R6 makes, spread over its kills.
const r6Writes, r6Kills, r6Writers = 1000, 20, 4

// R6: SIGKILL the server that leads etcd, 20 times, while 4 writers deploy
// 1,000 revisions through clients that know every server: every
// acknowledged write is there afterwards, as the revision it was
// acknowledged as, and no write made two revisions.
func (h *ha) r6KillEtcdLeader(t *testing.T) {
	type ack struct {
		fn, rev string
		w       int
	}
	var (
		mu      sync.Mutex
		acks    []ack
		retried int
		lastAck time.Time
		// budget is how many writes may start: raised chunk by chunk, one
		// chunk a kill, so that the writes run across every kill.
		budget   int
		budgetCh = make(chan struct{})
	)
	raise := func(n int) {
		mu.Lock()
		budget = n
		close(budgetCh)
		budgetCh = make(chan struct{})
		mu.Unlock()
	}
	acked := func() (int, time.Time) {
		mu.Lock()
		defer mu.Unlock()
		return len(acks), lastAck
	}
	apis := h.c.Client().Servers()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	next := 0 // the next write's number, shared: each write's env value is unique
	for w := range r6Writers {
		// Each writer starts at another server, and deploys a function of
		// its own: its writes are in order, one at a time.
		cfg, err := client.LoadConfig(h.c.ConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Server = strings.Join(append(slices.Clone(apis[w%len(apis):]), apis[:w%len(apis)]...), ",")
		cl, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fn := fmt.Sprintf("r6-%d", w)
		t.Cleanup(func() { h.c.Surge("rm", fn) })
		wg.Go(func() {
			for {
				mu.Lock()
				for next >= budget && next < r6Writes && ctx.Err() == nil {
					ch := budgetCh
					mu.Unlock()
					select {
					case <-ch:
					case <-ctx.Done():
					}
					mu.Lock()
				}
				if next >= r6Writes || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				n := next
				next++
				mu.Unlock()
				f := &api.Function{Metadata: api.ObjectMeta{Name: fn}, Spec: api.FunctionSpec{
					Image: "example.test/r6:v1",
					Env:   []api.EnvVar{{Name: "W", Value: strconv.Itoa(n)}},
					// More than any node has: the revisions' replicas stay
					// Pending, and R6 measures etcd and the API alone.
					Resources: api.Resources{CPU: "64"},
				}}
				for attempt := 0; ; attempt++ {
					wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
					out, err := cl.PutFunction(wctx, f)
					wcancel()
					if err == nil {
						mu.Lock()
						acks = append(acks, ack{fn: fn, rev: out.Status.LatestRevision, w: n})
						retried += min(attempt, 1)
						lastAck = time.Now()
						mu.Unlock()
						break
					}
					if ctx.Err() != nil {
						return
					}
					time.Sleep(50 * time.Millisecond) // not acknowledged: the same write again
				}
			}
		})
	}

	const chunk = r6Writes / r6Kills
	var stalls, backs []time.Duration
	for k := range r6Kills {
		st := h.status(t, "an etcd leader and three servers serving", time.Minute, func(st *api.ClusterStatus) bool {
			return st.EtcdLeader != "" && h.serving(0) && h.serving(1) && h.serving(2)
		})
		// The chunk's writes start; the kill comes once a fifth are done.
		raise(chunk * (k + 1))
		waitUntil(t, "writes flowing", time.Minute, func() bool { n, _ := acked(); return n >= chunk*k+chunk/5 })
		i := h.indexOf(t, st.EtcdLeader)
		if err := h.c.Servers[i].Stop(syscall.SIGKILL, 10*time.Second); err != nil {
			t.Fatalf("kill %s: %v", h.c.Servers[i].Name, err)
		}
		killed := time.Now()
		waitUntil(t, "a write acknowledged after the kill", time.Minute, func() bool {
			n, last := acked()
			return last.After(killed) || n >= chunk*(k+1)
		})
		if _, last := acked(); last.After(killed) {
			stalls = append(stalls, last.Sub(killed))
		}
		backs = append(backs, h.restart(t, i))
	}
	waitUntil(t, fmt.Sprintf("%d writes acknowledged", r6Writes), 2*time.Minute, func() bool { n, _ := acked(); return n == r6Writes })
	cancel()
	wg.Wait()

	// Every acknowledged write is the revision it was acknowledged as;
	// every revision carries a write of its own.
	lost, dups := 0, 0
	var problems []string
	byFn := map[string][]api.Revision{}
	for w := range r6Writers {
		fn := fmt.Sprintf("r6-%d", w)
		l, err := client.List[api.Revision](context.Background(), h.c.Client(), api.DefaultNamespace, map[string][]string{"function": {fn}})
		if err != nil {
			t.Fatal(err)
		}
		byFn[fn] = l.Items
		seen := map[string]string{}
		for _, r := range l.Items {
			w := envOf(r.Spec.Template.Env, "W")
			if other, ok := seen[w]; ok {
				dups++
				problems = append(problems, fmt.Sprintf("write %s made %s and %s", w, other, r.Metadata.Name))
			}
			seen[w] = r.Metadata.Name
		}
	}
	for _, a := range acks {
		if seen := revisionWith(byFn[a.fn], a.rev); seen != strconv.Itoa(a.w) {
			lost++
			problems = append(problems, fmt.Sprintf("write %d acknowledged as %s, which holds %q", a.w, a.rev, seen))
		}
	}
	slices.Sort(stalls)
	slices.Sort(backs)
	stall := func(q float64) time.Duration {
		if len(stalls) == 0 {
			return 0
		}
		return stalls[int(q*float64(len(stalls)-1))].Round(time.Millisecond)
	}
	report(t, "R6 SIGKILL the etcd leader x%d during %d writes: %d acknowledged, %d lost (goal 0), %d duplicate revisions (goal 0), %d written again after a failure; first write after a kill p50 %s max %s (%d kills mid-write); killed server serving again p50 %s",
		r6Kills, r6Writes, len(acks), lost, dups, retried, stall(0.5), stall(1), len(stalls), backs[len(backs)/2].Round(time.Millisecond))
	if lost > 0 || dups > 0 {
		t.Errorf("R6: %s", strings.Join(problems[:min(len(problems), 5)], "; "))
	}
}

// envOf is an env var's value ("" when absent).
func envOf(env []api.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// revisionWith is the W of the revision named rev ("" when there is none).
func revisionWith(revs []api.Revision, rev string) string {
	for _, r := range revs {
		if r.Metadata.Name == rev {
			return envOf(r.Spec.Template.Env, "W")
		}
	}
	return "<no such revision>"
}

// R7: SIGKILL the server that leads the controllers and the autoscaler at
// the moment a function's load steps from 1 to 10 clients: a new leader
// scales the function up within 5s of the kill, and no request fails.
func (h *ha) r7KillControllersLeader(t *testing.T) {
	image := strings.TrimSpace(h.c.MustSurge("build", "../examples/hello", "-t", "hello:v1"))
	// One request per replica; a stable window that gives the first
	// replica time to start on a cluster R6 has just shaken.
	h.c.MustSurge("deploy", "r7", "--image", image, "--concurrency", "1", "--window", "20s")
	t.Cleanup(func() { h.c.Surge("rm", "r7") })
	ctx := context.Background()
	scale := func() *api.Scale {
		sc, err := client.Get[api.Scale](ctx, h.c.Client(), api.Key{Namespace: api.DefaultNamespace, Name: "r7-00001"})
		if err != nil {
			return &api.Scale{}
		}
		return sc
	}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer httpc.CloseIdleConnections()
	get := func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.c.GatewayAddr(0)+"/", nil)
		req.Host = "r7.surge.localhost"
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "hello from surge") {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}
	waitUntil(t, "r7 answering", time.Minute, func() bool { return get() == nil })
	load := closedloop.Start(ctx, 1, get)
	time.Sleep(3 * time.Second) // one client's steady state before the step

	// The controllers' leader, apart from etcd's (the leader hands etcd's
	// leadership away, so that its death costs no etcd election).
	st := h.status(t, "a controllers' leader that does not lead etcd", 30*time.Second, func(st *api.ClusterStatus) bool {
		return st.Leader != "" && st.EtcdLeader != "" && st.Leader != st.EtcdLeader
	})
	before := scale().Spec.Replicas
	i := h.indexOf(t, st.Leader)
	victim := h.c.Servers[i]
	if err := victim.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	load.Add(9)
	var elected, acted, ready time.Duration
	newLeader := ""
	for deadline := killed.Add(60 * time.Second); (elected == 0 || acted == 0 || ready == 0) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if elected == 0 {
			if s, err := h.c.ClusterStatus(); err == nil && s.Leader != "" && s.Leader != st.Leader {
				elected, newLeader = time.Since(killed), s.Leader
			}
		}
		sc := scale()
		if acted == 0 && sc.Spec.Replicas > before {
			acted = time.Since(killed)
		}
		if ready == 0 && sc.Status.ReadyReplicas > before {
			ready = time.Since(killed)
		}
	}
	time.Sleep(2 * time.Second) // the step goes on past the new replicas
	res := load.Stop()
	back := h.restart(t, i)
	report(t, "R7 SIGKILL the controllers' leader %s at a 1->10 client step: %s leads after %s, scales %d->%d after %s (goal <= 5s), more replicas Ready after %s; %d requests, %d failed (goal 0); %s serving again after %s",
		st.Leader, newLeader, elected.Round(time.Millisecond), before, scale().Spec.Replicas, acted.Round(time.Millisecond),
		ready.Round(time.Millisecond), res.OK+res.Failed, res.Failed, victim.Name, back.Round(time.Millisecond))
	if elected == 0 || acted == 0 || acted > 5*time.Second || res.Failed > 0 {
		t.Errorf("R7: leader after %s, scale-up after %s, %d failed (first: %s)", elected, acted, res.Failed, res.FirstErr)
	}
}

// R16: an image pushed through server 1 is on a second server when the
// push returns; server 1 is killed; a function deployed through server 2
// with the image as server 2 names it starts, its agent pulling through
// server 2, and so does one naming the image as the push printed it, at
// the dead server 1.
func (h *ha) r16ImageOutlivesItsServer(t *testing.T) {
	// Another build time: an image none of the servers holds yet.
	t.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(time.Now().Unix(), 10))
	s1, s2 := h.c.ServerURL(0), h.c.ServerURL(1)
	pushed := strings.TrimSpace(h.c.MustSurge("--api", s1, "build", "../examples/hello", "-t", "r16:v1"))
	_, digest, ok := strings.Cut(pushed, "@")
	if !ok || !strings.HasPrefix(pushed, strings.TrimPrefix(s1, "https://")+"/") {
		t.Fatalf("build through s1 printed %q, want a reference at s1 by digest", pushed)
	}
	var holders []string
	for i := range h.c.Servers {
		if h.holds(t, i, "default/r16", digest) {
			holders = append(holders, h.c.Servers[i].Host.Name)
		}
	}
	if err := h.c.Servers[0].Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// When s1 led etcd, s2 answers once the others have elected a leader
	// (R6 measures that); the deploy is sent then.
	waitUntil(t, "s2 serving", time.Minute, func() bool { return h.serving(1) })
	viaS2 := strings.TrimPrefix(s2, "https://") + "/default/r16@" + digest
	start := time.Now()
	h.c.MustSurge("--api", s2, "deploy", "r16", "--image", viaS2)
	t.Cleanup(func() { h.c.Surge("rm", "r16") })
	s := &scenarios{c: h.c}
	s.waitReady(t, "r16", 1, time.Minute)
	viaS2Took := time.Since(start)
	start = time.Now()
	h.c.MustSurge("--api", s2, "deploy", "r16b", "--image", pushed)
	t.Cleanup(func() { h.c.Surge("rm", "r16b") })
	s.waitReady(t, "r16b", 1, time.Minute)
	viaS1Took := time.Since(start)
	report(t, "R16 push through s1 (held by %s when the push returned), SIGKILL s1, deploy through s2: replica Ready after %s pulling through s2; one naming s1's image Ready after %s",
		strings.Join(holders, " and "), viaS2Took.Round(time.Millisecond), viaS1Took.Round(time.Millisecond))
	if len(holders) < 2 {
		t.Errorf("R16: the pushed image was on %v when the push returned, want two servers", holders)
	}
}

// holds reports whether server i's own registry has a manifest (asked as
// the servers ask each other, so that it fetches nothing).
func (h *ha) holds(t *testing.T, i int, repo, digest string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, h.c.ServerURL(i)+"/v2/"+repo+"/manifests/"+digest, nil)
	req.Header.Set("Authorization", "Bearer "+h.c.Client().Token())
	req.Header.Set("Surge-Replica", "1")
	resp, err := h.c.Client().Transport().RoundTrip(req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
