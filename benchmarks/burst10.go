package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// B10's shape: bursts of concurrent requests, each its own connection,
// to examples/hello through a `surge up` subprocess.
const (
	// b10MaxScale bounds every B10 function: a two-core machine starts ten
	// replicas well, fifty poorly. The asks the gateway makes are printed
	// as the autoscaler caps them.
	b10MaxScale = 10
	// b10StepFrom and b10StepTo are the warm step's clients; its function
	// takes b10StepConcurrency requests per replica, so 500 clients are
	// far more than one replica holds.
	b10StepFrom, b10StepTo = 10, 500
	b10StepConcurrency     = 10
	// b10StepFor is how long the step's clients go on after it.
	b10StepFor = 10 * time.Second
	// b10RequestTimeout bounds one request: a cold start, a queue.
	b10RequestTimeout = 2 * time.Minute
	// b10Poll is how often the Scale and the memory are read during a
	// burst: the resolution of the timelines.
	b10Poll = 50 * time.Millisecond
)

// BurstFromZero is B10: through a `surge up` subprocess, 500 and then
// 5,000 concurrent requests (each on its own connection) to a function at
// zero, and a step from 10 to 500 closed-loop clients on a warm one whose
// replicas hold 10 requests each. Each row gives the success rate (goal
// 100%), the latency of the answers, the time until every request (or,
// for the step, every new client's first) was answered, the replicas
// asked (Scale spec.replicas) and Ready (status.readyReplicas) over time,
// and the peak growth of the surge process's memory, which holds the
// waiting requests (the gateway), the API and the agent. There is no
// baseline.
func BurstFromZero(ctx context.Context) (_ []Row, retErr error) {
	if err := needRuntime("B10"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	up, err := startSurgeUp(ctx, "surgeb10", "10.249.0.0/16")
	if err != nil {
		return nil, fmt.Errorf("B10: %w", err)
	}
	defer func() { retErr = errors.Join(retErr, up.close(ctx)) }()
	image, err := up.build(ctx, "hello:b10")
	if err != nil {
		return nil, fmt.Errorf("B10: %w", err)
	}
	var rows []Row
	for _, n := range []int{500, 5000} {
		row, err := up.burstFromZero(ctx, fmt.Sprintf("zero-%d", n), image, n)
		if err != nil {
			return rows, fmt.Errorf("B10 0→%d: %w", n, err)
		}
		rows = append(rows, row)
	}
	row, err := up.stepWarm(ctx, "warm-step", image)
	if err != nil {
		return rows, fmt.Errorf("B10 %d→%d: %w", b10StepFrom, b10StepTo, err)
	}
	return append(rows, row), nil
}

// burstFromZero deploys fn, waits until it is at zero, sends n requests
// at once, and removes fn again.
func (s *surgeUp) burstFromZero(ctx context.Context, fn, image string, n int) (_ Row, retErr error) {
	out, err := deploy(ctx, s.api, fn, image, func(spec *api.FunctionSpec) {
		spec.Scaling.MaxScale = b10MaxScale
		spec.Scaling.StableWindow = api.Seconds(6)
		spec.Scaling.ScaleToZeroGrace = api.Seconds(1)
	})
	if err != nil {
		return Row{}, err
	}
	defer func() { retErr = errors.Join(retErr, s.remove(ctx, fn)) }()
	rev := api.Key{Namespace: "default", Name: out.Status.LatestRevision}
	// Its initial replica, for a stable window, then zero.
	err = poll(ctx, 3*time.Minute, 100*time.Millisecond, func() error {
		sc, err := client.Get[api.Scale](ctx, s.api, rev)
		if err != nil {
			return err
		}
		reps, err := client.List[api.Replica](ctx, s.api, "default", nil)
		if err != nil {
			return err
		}
		left := 0
		for _, r := range reps.Items {
			if r.Spec.Revision == rev.Name {
				left++
			}
		}
		if sc.Spec.Replicas != 0 || left != 0 {
			return fmt.Errorf("%d replicas asked, %d exist", sc.Spec.Replicas, left)
		}
		return nil
	})
	if err != nil {
		return Row{}, fmt.Errorf("%s never at zero: %w", fn, err)
	}

	w := s.watchBurst(ctx, rev)
	hc := &http.Client{Timeout: b10RequestTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	fire := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []time.Duration
	var last time.Duration
	codes := map[string]int{}
	for range n {
		wg.Go(func() {
			<-fire
			start := time.Now()
			err := s.hello(ctx, hc, fn)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			last = max(last, since(w.start, time.Now()))
			if err != nil {
				codes[shortErr(err)]++
				return
			}
			codes["200"]++
			lat = append(lat, took)
		})
	}
	close(fire)
	wg.Wait()
	timeline := w.stop()
	return Row{
		Bench:   "B10",
		Subject: fmt.Sprintf("0→%d concurrent requests to a function at zero", n),
		Samples: lat,
		Value:   100 * float64(codes["200"]) / float64(n),
		Unit:    "% ok",
		Note: fmt.Sprintf("goal 100%%; answers %v; all answered in %s; %s; maxScale %d",
			codes, last.Round(time.Millisecond), timeline, b10MaxScale),
	}, nil
}

// stepWarm deploys fn with one Ready replica of b10StepConcurrency
// requests, loads it with b10StepFrom closed-loop clients, steps to
// b10StepTo, and removes fn again.
func (s *surgeUp) stepWarm(ctx context.Context, fn, image string) (_ Row, retErr error) {
	out, err := deploy(ctx, s.api, fn, image, func(spec *api.FunctionSpec) {
		spec.Concurrency = b10StepConcurrency
		spec.Scaling.MinScale = 1
		spec.Scaling.MaxScale = b10MaxScale
		spec.Scaling.StableWindow = api.Seconds(6)
	})
	if err != nil {
		return Row{}, err
	}
	defer func() { retErr = errors.Join(retErr, s.remove(ctx, fn)) }()
	rev := api.Key{Namespace: "default", Name: out.Status.LatestRevision}
	hc := &http.Client{Timeout: b10RequestTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: b10StepTo}}
	defer hc.CloseIdleConnections()
	if err := poll(ctx, time.Minute, 50*time.Millisecond, func() error { return s.hello(ctx, hc, fn) }); err != nil {
		return Row{}, fmt.Errorf("first request to %s: %w", fn, err)
	}

	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var stepAt atomic.Pointer[time.Time]
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []time.Duration
	var ok, failed int
	var firstErr string
	var allFirst time.Duration // the last new client's first answer, since the step
	client := func(isNew bool) {
		first := isNew
		for lctx.Err() == nil {
			start := time.Now()
			err := s.hello(lctx, hc, fn)
			if lctx.Err() != nil {
				return // cut short by the end of the load
			}
			mu.Lock()
			if at := stepAt.Load(); at != nil && !start.Before(*at) {
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = shortErr(err)
					}
				} else {
					ok++
					lat = append(lat, time.Since(start))
				}
				if first {
					allFirst, first = max(allFirst, time.Since(*at)), false
				}
			}
			mu.Unlock()
		}
	}
	for range b10StepFrom {
		wg.Go(func() { client(false) })
	}
	select { // the small load's steady state
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return Row{}, ctx.Err()
	}
	w := s.watchBurst(ctx, rev)
	now := w.start
	stepAt.Store(&now)
	for range b10StepTo - b10StepFrom {
		wg.Go(func() { client(true) })
	}
	select {
	case <-time.After(b10StepFor):
	case <-ctx.Done():
	}
	stop()
	wg.Wait()
	timeline := w.stop()
	note := fmt.Sprintf("goal 100%%; %d requests in %s after the step, %d failed; every new client answered within %s; %s; concurrency %d, maxScale %d",
		ok+failed, b10StepFor, failed, allFirst.Round(time.Millisecond), timeline, b10StepConcurrency, b10MaxScale)
	if firstErr != "" {
		note += "; first failure: " + firstErr
	}
	return Row{
		Bench:   "B10",
		Subject: fmt.Sprintf("%d→%d clients on a warm function", b10StepFrom, b10StepTo),
		Samples: lat,
		Value:   100 * float64(ok) / float64(max(ok+failed, 1)),
		Unit:    "% ok",
		Note:    note,
	}, nil
}

// hello sends one GET to function fn through the gateway and checks its
// answer.
func (s *surgeUp) hello(ctx context.Context, hc *http.Client, fn string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.gateway+"/", nil)
	if err != nil {
		return err
	}
	req.Host = fn + ".surge.localhost"
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("hello from surge")) {
		return fmt.Errorf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// shortErr is an error's first words: a status code, or the kind of a
// transport error.
func shortErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && !strings.HasPrefix(msg, "5") && !strings.HasPrefix(msg, "4") {
		msg = msg[i+2:]
	}
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}

// burstWatch reads a revision's Scale and the surge process's memory every
// b10Poll from a burst's start, and keeps their changes.
type burstWatch struct {
	start time.Time // the burst's start: the watch's
	done  chan struct{}
	wg    sync.WaitGroup

	asked, ready    []stamp
	rss0, rssPeak   int64
	lastA, lastR    int32
	readErr         error
	readErrs, reads int
}

// stamp is a count and when, since the burst's start, it was first seen.
type stamp struct {
	at time.Duration
	n  int32
}

// watchBurst starts watching rev's Scale and the surge process's memory.
func (s *surgeUp) watchBurst(ctx context.Context, rev api.Key) *burstWatch {
	// The caller starts the burst right after.
	w := &burstWatch{start: time.Now(), done: make(chan struct{}), lastA: -1, lastR: -1}
	pid := s.cmd.Process.Pid
	w.rss0, _ = processRSS(pid)
	w.rssPeak = w.rss0
	w.wg.Go(func() {
		t := time.NewTicker(b10Poll)
		defer t.Stop()
		for {
			if rss, err := processRSS(pid); err == nil {
				w.rssPeak = max(w.rssPeak, rss)
			}
			w.reads++
			if sc, err := client.Get[api.Scale](ctx, s.api, rev); err != nil {
				w.readErrs++
				w.readErr = err
			} else {
				at := since(w.start, time.Now())
				if sc.Spec.Replicas != w.lastA {
					w.asked, w.lastA = append(w.asked, stamp{at, sc.Spec.Replicas}), sc.Spec.Replicas
				}
				if sc.Status.ReadyReplicas != w.lastR {
					w.ready, w.lastR = append(w.ready, stamp{at, sc.Status.ReadyReplicas}), sc.Status.ReadyReplicas
				}
			}
			select {
			case <-w.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return w
}

// stop ends the watch and says what it saw.
func (w *burstWatch) stop() string {
	close(w.done)
	w.wg.Wait()
	line := func(ss []stamp) string {
		var parts []string
		for _, s := range ss {
			parts = append(parts, fmt.Sprintf("%d@%s", s.n, s.at.Round(10*time.Millisecond)))
		}
		return strings.Join(parts, " ")
	}
	out := fmt.Sprintf("replicas asked %s; Ready %s; surge process memory %.0f MiB, peak +%.0f MiB",
		line(w.asked), line(w.ready), float64(w.rss0)/(1<<20), float64(w.rssPeak-w.rss0)/(1<<20))
	if w.readErrs > 0 {
		out += fmt.Sprintf(" (%d of %d Scale reads failed: %v)", w.readErrs, w.reads, w.readErr)
	}
	return out
}

// processRSS is one process's resident memory in bytes (not its
// children's: the surge process's containerd and replicas are apart).
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	kb, err := parseStatusKB(b, "VmRSS:")
	return kb << 10, err
}
