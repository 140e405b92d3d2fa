package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// LoadOptions shape a bounded load: Clients closed-loop clients, each
// sending its next request when the last is answered, for Duration at most.
type LoadOptions struct {
	// Targets are gateway addresses (HOST:PORT); client i sends to
	// Targets[i % len(Targets)].
	Targets []string
	// Host is the Host header (the function's host name); Path the path.
	Host, Path string
	Clients    int
	Duration   time.Duration
	// Timeout bounds one request.
	Timeout time.Duration
	// HealthPath, when set, makes the load behave like a TCP load
	// balancer in front of the targets: it checks HealthPath on each every
	// 200ms, sends only to those that answer 200 (round robin), and sends a
	// request whose connection was refused once more to another target.
	HealthPath string
}

// Sample is one request's outcome.
type Sample struct {
	// At is when it was sent, from the load's start.
	At      time.Duration
	Latency time.Duration
	Target  string
	// Status is the HTTP status, 0 when the request failed without one.
	Status int
	// Replica is the replica that answered, from the function's "host:"
	// line (the example functions print their host name, the replica's).
	Replica string
	// Err is why the request failed: a transport error, or the body of a
	// non-2xx answer.
	Err string
}

// OK reports whether the request got a 2xx answer.
func (s Sample) OK() bool { return s.Err == "" && s.Status >= 200 && s.Status < 300 }

// Load is a running load. Stop it, or let its Duration end it.
type Load struct {
	opts  LoadOptions
	start time.Time
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu      sync.Mutex
	samples []Sample
	healthy []string // with HealthPath: the targets that pass it
	next    int
}

// StartLoad starts the clients. They send only to opts.Targets and stop by
// themselves after opts.Duration.
func StartLoad(opts LoadOptions) *Load {
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Path == "" {
		opts.Path = "/"
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Duration)
	l := &Load{opts: opts, start: time.Now(), stop: cancel}
	tr := &http.Transport{
		MaxIdleConnsPerHost: opts.Clients,
		DialContext:         (&net.Dialer{Timeout: opts.Timeout}).DialContext,
	}
	hc := &http.Client{Transport: tr, Timeout: opts.Timeout}
	if opts.HealthPath != "" {
		l.healthy = append([]string(nil), opts.Targets...)
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.checkHealth(ctx, hc) }()
	}
	for i := range opts.Clients {
		fixed := opts.Targets[i%len(opts.Targets)]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				target := fixed
				if opts.HealthPath != "" {
					target = l.pick("")
				}
				s := l.one(ctx, hc, target)
				if opts.HealthPath != "" && s.Status == 0 && strings.Contains(s.Err, "connection refused") {
					s = l.one(ctx, hc, l.pick(target)) // as a load balancer redispatches
				}
				if ctx.Err() != nil && !s.OK() {
					return // cut short by the end of the load, not a failure
				}
				l.mu.Lock()
				l.samples = append(l.samples, s)
				l.mu.Unlock()
			}
		}()
	}
	go func() { l.wg.Wait(); tr.CloseIdleConnections() }()
	return l
}

// checkHealth keeps l.healthy current until ctx ends.
func (l *Load) checkHealth(ctx context.Context, hc *http.Client) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		var ok []string
		for _, target := range l.opts.Targets {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+l.opts.HealthPath, nil)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok = append(ok, target)
				}
			}
		}
		l.mu.Lock()
		l.healthy = ok
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pick returns the next healthy target other than not (any target when
// none is healthy).
func (l *Load) pick(not string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	candidates := l.healthy
	if len(candidates) == 0 {
		candidates = l.opts.Targets
	}
	for range candidates {
		l.next++
		if t := candidates[l.next%len(candidates)]; t != not || len(candidates) == 1 {
			return t
		}
	}
	return candidates[0]
}

func (l *Load) one(ctx context.Context, hc *http.Client, target string) Sample {
	s := Sample{At: time.Since(l.start), Target: target}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+l.opts.Path, nil)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	req.Host = l.opts.Host
	resp, err := hc.Do(req)
	if err != nil {
		s.Latency, s.Err = time.Since(l.start)-s.At, err.Error()
		return s
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	s.Latency, s.Status = time.Since(l.start)-s.At, resp.StatusCode
	switch {
	case err != nil:
		s.Err = "read body: " + err.Error()
	case !s.OK():
		s.Err = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	if _, rest, ok := bytes.Cut(body, []byte("host: ")); ok {
		line, _, _ := bytes.Cut(rest, []byte("\n"))
		s.Replica = string(bytes.TrimSpace(line))
	}
	return s
}

// Since is the time since the load started, on the samples' scale.
func (l *Load) Since() time.Duration { return time.Since(l.start) }

// Wait waits until the load has ended (its Duration, or Stop) and returns
// every sample, in the order they were sent.
func (l *Load) Wait() Result {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]Sample(nil), l.samples...)
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return Result(out)
}

// Stop ends the load now and returns its samples.
func (l *Load) Stop() Result {
	l.stop()
	return l.Wait()
}

// Result is a load's samples.
type Result []Sample

// Failed returns the samples that did not get a 2xx answer.
func (r Result) Failed() Result {
	var out Result
	for _, s := range r {
		if !s.OK() {
			out = append(out, s)
		}
	}
	return out
}

// SuccessRate is the share of samples that got a 2xx answer (1 when there
// are none).
func (r Result) SuccessRate() float64 {
	if len(r) == 0 {
		return 1
	}
	return 1 - float64(len(r.Failed()))/float64(len(r))
}

// Where returns the samples for which keep holds.
func (r Result) Where(keep func(Sample) bool) Result {
	var out Result
	for _, s := range r {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// Errors summarises failures: each distinct error (its first 80 bytes)
// with its count, most frequent first.
func (r Result) Errors() string {
	counts := map[string]int{}
	for _, s := range r.Failed() {
		e := s.Err
		if len(e) > 80 {
			e = e[:80]
		}
		counts[e]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", counts[k], k)
	}
	return strings.Join(parts, "; ")
}

// Percentile is the p-th percentile (0 to 100) of the latencies of the
// samples that succeeded.
func (r Result) Percentile(p float64) time.Duration {
	var lat []time.Duration
	for _, s := range r {
		if s.OK() {
			lat = append(lat, s.Latency)
		}
	}
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[min(len(lat)-1, int(p/100*float64(len(lat))))]
}
