package network

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/netns"

	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// The warm pool keeps Config.PoolSize network namespaces with their CNI
// ADD done, so that a replica's start takes one (a file rename) instead of
// waiting for the ADD: tens of milliseconds of plugin processes, iptables
// and veth set-up that otherwise run beside runc's create and slow it on
// a small node. RunPool fills it in the background.
//
// An entry is recorded under StateDir/pool before its ADD, like an
// attachment, with its owner (the Network that made it: process id and
// start time, and a token per Network). Only the owner takes or releases
// its entries; the entries of an owner that is gone (an agent killed
// without Close) are released by the next Network that runs RunPool or
// RemoveOrphans on the state dir. A taken entry becomes the replica's
// attachment, with CNIID naming the entry, since CNI's DEL must be given
// the id of the ADD; the replica's record is written before the entry's
// is removed, and an entry whose id a replica's record names is only
// dropped, never released.

// poolState is where a Network's RunPool is.
type poolState int

const (
	poolIdle    poolState = iota // not started yet
	poolRunning                  // filling
	poolStopped                  // returned; what it held is released
)

// poolEntry is a warm pool namespace, as recorded.
type poolEntry struct {
	Attachment
	Owner poolOwner `json:"owner"`
}

// poolOwner names the Network that made a pool entry.
type poolOwner struct {
	PID int `json:"pid"`
	// Start is the process's start time in clock ticks after boot
	// (/proc/PID/stat), so that a reused PID is not taken for the owner.
	Start uint64 `json:"start"`
	// Token tells apart Networks of one process (tests, or an agent that
	// made a new Runtime).
	Token string `json:"token"`
}

// pool is the warm pool's state in a Network.
type pool struct {
	records store[poolEntry]
	owner   poolOwner

	mu      sync.Mutex
	ready   []Attachment  // this Network's entries, ADD done, not taken
	state   poolState     // where RunPool is
	changed chan struct{} // closed and replaced when ready or state changes
	taken   chan struct{} // one buffered signal: an entry was taken
}

func newPool(dir string) (pool, error) {
	tok := make([]byte, 8)
	rand.Read(tok)
	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return pool{}, fmt.Errorf("network: warm pool: %w", err)
	}
	return pool{
		records: store[poolEntry]{dir: dir},
		owner:   poolOwner{PID: pid, Start: start, Token: hex.EncodeToString(tok)},
		changed: make(chan struct{}),
		taken:   make(chan struct{}, 1),
	}, nil
}

// processStart is the start time of process pid, in clock ticks after
// boot: field 22 of /proc/PID/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' start with field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether the process that owns an entry still runs.
func (o poolOwner) alive() bool {
	start, err := processStart(o.PID)
	return err == nil && start == o.Start
}

// notify wakes WaitPool callers; p.mu must be held.
func (p *pool) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// RunPool keeps Config.PoolSize network namespaces ready, their CNI ADD
// done, for Setup and Reserve to take, until ctx ends; it then releases
// the ones left (CNI DEL) and returns. It first releases the entries of
// earlier Networks on the state dir whose process is gone. After a take
// it waits Config.PoolRefillDelay before refilling, so that the ADD does
// not compete for the CPU with the start that took the entry. A failed
// refill is logged and retried with back-off. In ModeHost, or with
// PoolSize 0, it returns at once. At most one RunPool runs per Network.
func (n *Network) RunPool(ctx context.Context) error {
	if n.mode != ModeCNI || n.cfg.PoolSize == 0 {
		return nil
	}
	p := &n.pool
	p.mu.Lock()
	if p.state != poolIdle {
		p.mu.Unlock()
		return errors.New("network: RunPool runs once per Network")
	}
	p.state = poolRunning
	p.notify()
	p.mu.Unlock()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := n.drainPool(cctx); err != nil {
			n.cfg.Log.Warn("release warm network namespaces", "err", err)
		}
	}()

	if err := n.ReleaseStalePool(ctx); err != nil {
		n.cfg.Log.Warn("release warm network namespaces of an earlier agent", "err", err)
	}
	failures := 0
	for {
		for n.poolLen() < n.cfg.PoolSize {
			err := n.fillOne(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				failures = 0
				continue
			}
			failures++
			delay := refillBackoff.Delay(failures)
			n.cfg.Log.Warn("refill warm network namespaces", "err", err, "retry_in", delay)
			if !clock.Sleep(ctx, n.cfg.Clock, delay) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.taken:
		}
		if !clock.Sleep(ctx, n.cfg.Clock, n.cfg.PoolRefillDelay) {
			return nil
		}
	}
}

// refillBackoff spaces the retries of a failing refill (plugins missing,
// subnet exhausted): a replica's start does its own ADD meanwhile, so a
// slow retry costs little. No jitter: one node's refill fails alone.
var refillBackoff = backoff.Policy{Base: 100 * time.Millisecond, Max: 30 * time.Second}

func (n *Network) poolLen() int {
	n.pool.mu.Lock()
	defer n.pool.mu.Unlock()
	return len(n.pool.ready)
}

// Pooled returns how many namespaces the warm pool holds ready.
func (n *Network) Pooled() int { return n.poolLen() }

// WaitPool blocks until the warm pool is full, or ctx ends (its error is
// then returned): for callers, such as benchmarks, that want no refill
// running beside what they time. It returns at once when there is no pool
// (ModeHost, PoolSize 0) or its RunPool has returned, and blocks while
// RunPool has not started or cannot fill it.
func (n *Network) WaitPool(ctx context.Context) error {
	if n.mode != ModeCNI || n.cfg.PoolSize == 0 {
		return nil
	}
	p := &n.pool
	for {
		p.mu.Lock()
		done := p.state == poolStopped || len(p.ready) >= n.cfg.PoolSize
		ch := p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// fillOne makes one pool entry: a pinned namespace, recorded, then ADDed.
// A failed ADD leaves nothing behind.
func (n *Network) fillOne(ctx context.Context) error {
	p := &n.pool
	b := make([]byte, 6)
	rand.Read(b)
	id := "surge-pool-" + hex.EncodeToString(b)

	n.sweep.RLock()
	ns, err := netns.NewNetNS(n.netnsDir)
	if err != nil {
		n.sweep.RUnlock()
		return fmt.Errorf("warm network namespace: %w", err)
	}
	e := poolEntry{Attachment: Attachment{ID: id, Mode: ModeCNI, NetNS: ns.GetPath()}, Owner: p.owner}
	err = p.records.put(e)
	n.sweep.RUnlock()
	if err != nil {
		ns.Remove()
		return fmt.Errorf("warm network namespace: %w", err)
	}

	e.IP, err = n.cniAdd(ctx, id, e.NetNS)
	if err == nil {
		err = p.records.put(e)
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return errors.Join(fmt.Errorf("warm network namespace: %w", err), n.releaseEntry(cctx, e))
	}
	p.mu.Lock()
	p.ready = append(p.ready, e.Attachment)
	p.notify()
	p.mu.Unlock()
	return nil
}

// take hands replica id (locked by the caller) a ready pool entry, if
// there is one: the replica's record is written first, then the entry's
// removed. ok is false when the pool has none (or recording failed, which
// is logged): the caller makes a namespace of its own.
func (n *Network) take(ctx context.Context, id string) (_ Attachment, ok bool) {
	p := &n.pool
	for {
		p.mu.Lock()
		if len(p.ready) == 0 {
			p.mu.Unlock()
			return Attachment{}, false
		}
		e := p.ready[0]
		p.ready = p.ready[1:]
		p.notify()
		p.mu.Unlock()
		select {
		case p.taken <- struct{}{}:
		default:
		}

		if !netnsAlive(e.NetNS) {
			// Unmounted behind our back: release what is left of it and
			// try the next.
			if err := n.releaseEntry(ctx, poolEntry{Attachment: e, Owner: p.owner}); err != nil {
				n.cfg.Log.Warn("release a lost warm network namespace", "id", e.ID, "err", err)
			}
			continue
		}
		a := Attachment{ID: id, Mode: ModeCNI, NetNS: e.NetNS, IP: e.IP, CNIID: e.ID}
		if err := n.records.put(a); err != nil {
			n.cfg.Log.Warn("take a warm network namespace", "id", id, "err", err)
			p.mu.Lock()
			p.ready = append(p.ready, e)
			p.notify()
			p.mu.Unlock()
			return Attachment{}, false
		}
		if err := p.records.remove(e.ID); err != nil {
			// The entry's record outlives it; whoever finds it later sees
			// a replica's record naming it and drops it.
			n.cfg.Log.Warn("take a warm network namespace", "id", id, "err", err)
		}
		return a, true
	}
}

// releaseEntry undoes a pool entry (CNI DEL, unpin) and drops its record.
func (n *Network) releaseEntry(ctx context.Context, e poolEntry) error {
	if err := n.release(ctx, e.Attachment); err != nil {
		return err
	}
	return n.pool.records.remove(e.ID)
}

// drainPool releases this Network's ready entries.
func (n *Network) drainPool(ctx context.Context) error {
	p := &n.pool
	p.mu.Lock()
	entries := p.ready
	p.ready = nil
	p.state = poolStopped
	p.notify()
	p.mu.Unlock()
	var errs []error
	for _, a := range entries {
		if err := n.releaseEntry(ctx, poolEntry{Attachment: a, Owner: p.owner}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseStalePool releases the warm pool entries of Networks whose
// process is gone (an agent killed before it could release them): CNI
// DEL and unpin, or, for an entry a replica took before its record was
// dropped, only the record. Entries of live Networks, this one included,
// are left alone.
func (n *Network) ReleaseStalePool(ctx context.Context) error {
	entries, err := n.pool.records.list()
	if err != nil && len(entries) == 0 {
		return err
	}
	errs := []error{err}
	var taken map[string]bool
	for _, e := range entries {
		if e.Owner.Token == n.pool.owner.Token || e.Owner.alive() {
			continue
		}
		if taken == nil {
			// Read once, and only when an entry is stale: a replica record
			// is written before the entry it took is dropped.
			recs, err := n.records.list()
			if err != nil {
				// Without every record a taken entry could be released
				// under its replica.
				return errors.Join(append(errs, err)...)
			}
			taken = map[string]bool{}
			for _, a := range recs {
				taken[a.cniID()] = true
			}
		}
		if taken[e.ID] {
			errs = append(errs, n.pool.records.remove(e.ID))
			continue
		}
		unlock := n.ids.Lock(e.ID)
		if _, err := n.pool.records.get(e.ID); err == nil {
			errs = append(errs, n.releaseEntry(ctx, e))
		}
		unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release stale warm network namespaces: %w", err)
	}
	return nil
}

// ReplicaNamespaces lists the network namespaces pinned under stateDir (a
// Config.StateDir) that are not warm pool entries: those of replicas, and
// strays. It reads the records without a Network, for tests and tools
// that check what an agent holds; the pool's namespaces are no replica's
// while the agent runs, and go when it stops.
func ReplicaNamespaces(stateDir string) ([]string, error) {
	entries, err := store[poolEntry]{dir: filepath.Join(stateDir, "pool")}.list()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	pooled := map[string]bool{}
	for _, e := range entries {
		pooled[filepath.Base(e.NetNS)] = true
	}
	ents, err := os.ReadDir(filepath.Join(stateDir, "netns"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !pooled[e.Name()] {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
