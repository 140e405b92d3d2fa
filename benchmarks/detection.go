package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/gossip/gossiptest"
)

// B6's cluster and goal, from the issue.
const (
	detectMembers  = 100
	detectDeaths   = 100
	detectPerRound = 10 // members killed at once
	detectDelayed  = 20 // members whose messages are delayed, 20%
	detectDelay    = 2 * time.Second
	detectGoalP99  = 5 * time.Second
	// detectRoundLimit bounds one round's wait for its deaths: a bound on
	// a failure, not a measurement.
	detectRoundLimit = 60 * time.Second
)

// FailureDetection is B6: 100 members of Surge's gossip (real memberlist,
// with Surge's configuration: gossip.DefaultConfig) over an in-memory
// network, of which 20 have every packet they send, and every connection
// they open, delayed by 2 s, for the whole run. Ten at a time, members
// that are not delayed are killed (stopped without leaving, as a crash),
// 100 in all, and replaced by new ones; it measures the time from a kill
// until one member (the observer, as the control plane's server is)
// declares the member dead, and until every member that lives through the
// round does, and it counts the members declared dead that were not (false
// positives), the delayed ones among them.
func FailureDetection(ctx context.Context) ([]Row, error) {
	loadBefore := loadAverage()
	c := &detectCluster{rnd: rand.New(rand.NewPCG(6, 6)), rec: newDeathRecord()}
	defer c.stop()
	observer, err := c.start("observer", false)
	if err != nil {
		return nil, err
	}
	for i := 1; i < detectMembers; i++ {
		if _, err := c.start(fmt.Sprintf("m-%03d", i), i <= detectDelayed); err != nil {
			return nil, err
		}
	}
	if err := c.waitConverged(ctx, observer); err != nil {
		return nil, err
	}
	var first, all []time.Duration
	missing := 0
	for round := 0; len(first) < detectDeaths; round++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		victims := c.pickVictims(detectPerRound)
		killed := time.Now()
		for _, v := range victims {
			c.rec.killed(v.name, killed)
			v.kill()
		}
		survivors := c.alive()
		deadline := time.Now().Add(detectRoundLimit)
		for !c.rec.allDead(victims, survivors) && time.Now().Before(deadline) && ctx.Err() == nil {
			c.rec.wait(100 * time.Millisecond)
		}
		for _, v := range victims {
			f, a, ok := c.rec.times(v.name, observer.name, survivors, killed)
			if !ok {
				missing++
				continue
			}
			first, all = append(first, f), append(all, a)
		}
		for i := range victims {
			if _, err := c.start(fmt.Sprintf("r%02d-%02d", round, i), false); err != nil {
				return nil, err
			}
		}
		if err := c.waitConverged(ctx, observer); err != nil {
			return nil, err
		}
	}
	falseDead, delayedFalse := c.rec.falsePositives(c.delayedNames())
	p99 := Quantile(first, 0.99)
	note := fmt.Sprintf("goal p99 <= %s and 0 false positives: ", detectGoalP99)
	if p99 <= detectGoalP99 && falseDead == 0 && missing == 0 {
		note += "met"
	} else {
		note += "MISSED"
	}
	note += fmt.Sprintf("; %d false positives (%d of the delayed members), %d deaths never declared; load average %s then %s on %d cores",
		falseDead, delayedFalse, missing, loadBefore, loadAverage(), runtime.NumCPU())
	return []Row{
		{Bench: "B6", Subject: fmt.Sprintf("declared dead by the observer, %d members, %d%% delayed %s", detectMembers, detectDelayed, detectDelay),
			Samples: first, Note: note, Baseline: true},
		{Bench: "B6", Subject: "declared dead by every member left", Samples: all},
	}, nil
}

// loadAverage is the machine's one-minute load average, as
// /proc/loadavg says: B6 times real timers, which a busy machine delays.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// detectCluster is the members of one run.
type detectCluster struct {
	net     gossiptest.Network
	rnd     *rand.Rand
	rec     *deathRecord
	members []*detectMember
	wg      sync.WaitGroup // the members' Run
}

// detectMember is one member: its gossip, its transport, and its Run.
type detectMember struct {
	name    string
	g       *gossip.Gossip
	tr      *delayTransport
	cancel  context.CancelFunc
	delayed bool
	dead    bool
}

func (m *detectMember) kill() {
	m.dead = true
	_ = m.g.Close()
	m.cancel()
}

// detectKey is the run's gossip key: any 32 bytes.
var detectKey = []byte("surge-bench-b6-gossip-key-012345")

// start adds a member and joins it to the first one.
func (c *detectCluster) start(name string, delayed bool) (*detectMember, error) {
	tr := &delayTransport{Transport: c.net.NewTransport(), delay: detectDelay}
	tr.delayed.Store(delayed)
	cfg := gossip.DefaultConfig()
	cfg.NodeName, cfg.Key, cfg.Transport = name, detectKey, tr
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	g, err := gossip.New(cfg, deathHandler{c.rec, name})
	if err != nil {
		return nil, fmt.Errorf("start member %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &detectMember{name: name, g: g, tr: tr, cancel: cancel, delayed: delayed}
	c.wg.Go(func() { _ = g.Run(ctx) })
	if len(c.members) > 0 {
		jctx, jcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer jcancel()
		if _, err := g.Join(jctx, []string{c.members[0].tr.Addr()}); err != nil {
			m.kill()
			return nil, fmt.Errorf("member %s: %w", name, err)
		}
	}
	c.members = append(c.members, m)
	return m, nil
}

// waitConverged waits until the observer sees exactly the members alive.
func (c *detectCluster) waitConverged(ctx context.Context, observer *detectMember) error {
	want := len(c.alive())
	deadline := time.Now().Add(detectRoundLimit)
	for {
		n := 0
		for _, m := range observer.g.Members() {
			if m.State == gossip.MemberAlive {
				n++
			}
		}
		if n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the observer sees %d members alive, want %d, after %s", n, want, detectRoundLimit)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		c.rec.wait(50 * time.Millisecond)
	}
}

// pickVictims chooses n members to kill: alive, not delayed, not the
// observer.
func (c *detectCluster) pickVictims(n int) []*detectMember {
	var cands []*detectMember
	for _, m := range c.members[1:] {
		if !m.dead && !m.delayed {
			cands = append(cands, m)
		}
	}
	c.rnd.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	return cands[:min(n, len(cands))]
}

// alive lists the names of the members not killed.
func (c *detectCluster) alive() []string {
	var out []string
	for _, m := range c.members {
		if !m.dead {
			out = append(out, m.name)
		}
	}
	return out
}

func (c *detectCluster) delayedNames() map[string]bool {
	out := map[string]bool{}
	for _, m := range c.members {
		if m.delayed {
			out[m.name] = true
		}
	}
	return out
}

// stop stops every member and waits for their Run and their delayed
// packets.
func (c *detectCluster) stop() {
	for _, m := range c.members {
		if !m.dead {
			m.kill()
		}
	}
	c.wg.Wait()
	for _, m := range c.members {
		m.tr.pending.Wait()
	}
}

// deathHandler records the NodeDead events one member sees.
type deathHandler struct {
	rec      *deathRecord
	observer string
}

func (h deathHandler) OnNode(ev gossip.NodeEvent) {
	if ev.Type == gossip.NodeDead {
		h.rec.dead(h.observer, ev.Member.Name, time.Now())
	}
}

func (deathHandler) OnEndpoint(gossip.EndpointEvent) {}

// deathRecord is when each member was killed and when each observer
// declared it dead.
type deathRecord struct {
	mu     sync.Mutex
	kills  map[string]time.Time
	deaths map[string]map[string]time.Time // victim → observer → first report
	// falses are reports of a member that was not killed: victim →
	// observers.
	falses map[string]map[string]bool
	change chan struct{} // signalled on each report
}

func newDeathRecord() *deathRecord {
	return &deathRecord{kills: map[string]time.Time{}, deaths: map[string]map[string]time.Time{},
		falses: map[string]map[string]bool{}, change: make(chan struct{}, 1)}
}

func (r *deathRecord) killed(name string, at time.Time) {
	r.mu.Lock()
	r.kills[name] = at
	r.mu.Unlock()
}

func (r *deathRecord) dead(observer, victim string, at time.Time) {
	r.mu.Lock()
	if _, ok := r.kills[victim]; !ok {
		if r.falses[victim] == nil {
			r.falses[victim] = map[string]bool{}
		}
		r.falses[victim][observer] = true
	} else {
		if r.deaths[victim] == nil {
			r.deaths[victim] = map[string]time.Time{}
		}
		if _, seen := r.deaths[victim][observer]; !seen {
			r.deaths[victim][observer] = at
		}
	}
	r.mu.Unlock()
	select {
	case r.change <- struct{}{}:
	default:
	}
}

// wait returns on the next report, or after d.
func (r *deathRecord) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.change:
	case <-t.C:
	}
}

// allDead reports whether every survivor declared every victim dead.
func (r *deathRecord) allDead(victims []*detectMember, survivors []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range victims {
		for _, s := range survivors {
			if _, ok := r.deaths[v.name][s]; !ok {
				return false
			}
		}
	}
	return true
}

// times is how long after killed the observer, and every survivor,
// declared victim dead; ok is false when the observer did not.
func (r *deathRecord) times(victim, observer string, survivors []string, killed time.Time) (first, all time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.deaths[victim][observer]
	if !ok {
		return 0, 0, false
	}
	last := at
	for _, s := range survivors {
		if t, ok := r.deaths[victim][s]; ok && t.After(last) {
			last = t
		}
	}
	return at.Sub(killed), last.Sub(killed), true
}

// falsePositives counts the members declared dead that were not killed,
// and how many of them were delayed.
func (r *deathRecord) falsePositives(delayed map[string]bool) (n, ofDelayed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for v := range r.falses {
		n++
		if delayed[v] {
			ofDelayed++
		}
	}
	return n, ofDelayed
}

// delayTransport is a gossiptest transport that, while delayed, holds
// every packet its member sends, and every connection it opens, for delay:
// a member on a congested or distant link, whose acks come late.
type delayTransport struct {
	*gossiptest.Transport
	delay   time.Duration
	delayed atomic.Bool
	pending sync.WaitGroup // packets held
}

var _ memberlist.NodeAwareTransport = (*delayTransport)(nil)

// WriteTo implements memberlist.Transport.
func (t *delayTransport) WriteTo(b []byte, to string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: to})
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *delayTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if !t.delayed.Load() {
		return t.Transport.WriteToAddress(b, a)
	}
	buf := bytes.Clone(b)
	t.pending.Add(1)
	time.AfterFunc(t.delay, func() {
		defer t.pending.Done()
		_, _ = t.Transport.WriteToAddress(buf, a)
	})
	return time.Now(), nil
}

// DialTimeout implements memberlist.Transport.
func (t *delayTransport) DialTimeout(to string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: to}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *delayTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.delayed.Load() {
		if timeout <= t.delay {
			time.Sleep(timeout)
			return nil, errors.New("delayed past the dial's timeout")
		}
		time.Sleep(t.delay)
		timeout -= t.delay
	}
	return t.Transport.DialAddressTimeout(a, timeout)
}
