package network

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// runPool runs n's warm pool until the test ends, and waits for it to be
// full; stop stops it earlier and returns RunPool's error.
func runPool(t *testing.T, n *Network) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.RunPool(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	if err := n.WaitPool(testContext(t)); err != nil {
		t.Fatalf("warm pool never full: %v (holds %d)", err, n.Pooled())
	}
	return stop
}

// poolFiles returns the pool's records on disk.
func poolFiles(t *testing.T, n *Network) []poolEntry {
	t.Helper()
	es, err := n.pool.records.list()
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// ipHeld reports whether host-local has ip allocated.
func ipHeld(cfg Config, ip string) bool {
	_, err := os.Stat(filepath.Join(cfg.StateDir, "ipam", cfg.NetworkName, ip))
	return err == nil
}

func TestPoolRefillTakeRelease(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 246)
	cfg.PoolSize, cfg.PoolRefillDelay = 2, 0
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := runPool(t, n)

	warm := poolFiles(t, n)
	if len(warm) != 2 || n.Pooled() != 2 {
		t.Fatalf("pool holds %d, records %+v: want 2", n.Pooled(), warm)
	}
	for _, e := range warm {
		if e.IP == "" || !netnsAlive(e.NetNS) || !ipHeld(cfg, e.IP) {
			t.Fatalf("pool entry %+v: want an IP held by host-local and a live netns", e)
		}
	}

	// A Reserve takes a warm namespace, complete: its IP is there and
	// serves at once.
	start := time.Now()
	a, err := n.Reserve(ctx, "warm-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Reserve from the warm pool took %v", time.Since(start))
	t.Cleanup(func() { n.Teardown(context.Background(), "warm-a") })
	i := slices.IndexFunc(warm, func(e poolEntry) bool { return e.ID == a.CNIID })
	if i < 0 || a.IP != warm[i].IP || a.NetNS != warm[i].NetNS || a.ID != "warm-a" {
		t.Fatalf("Reserve = %+v: want one of the pool entries %+v", a, warm)
	}
	if again, err := n.Setup(ctx, "warm-a"); err != nil || again != a {
		t.Fatalf("Setup after a warm Reserve = %+v, %v; want %+v", again, err, a)
	}
	if err := n.Check(ctx, "warm-a"); err != nil {
		t.Errorf("Check (CNI CHECK under the entry's id): %v", err)
	}
	serveIn(t, a.NetNS, 8080)
	if got, err := dialRead(ctx, net.JoinHostPort(a.IP, "8080")); err != nil || got != "hi" {
		t.Fatalf("dial replica in a warm namespace: %q, %v", got, err)
	}

	// The pool refills; the taken entry's record is gone.
	if err := n.WaitPool(ctx); err != nil {
		t.Fatal(err)
	}
	refilled := poolFiles(t, n)
	if len(refilled) != 2 || slices.ContainsFunc(refilled, func(e poolEntry) bool { return e.ID == a.CNIID }) {
		t.Errorf("pool records after a take and refill: %+v", refilled)
	}

	// Tearing the replica down releases the entry's IP (DEL under the
	// entry's id).
	if err := n.Teardown(ctx, "warm-a"); err != nil {
		t.Fatal(err)
	}
	if ipHeld(cfg, a.IP) || netnsAlive(a.NetNS) {
		t.Errorf("after Teardown: IP %s held %v, netns alive %v", a.IP, ipHeld(cfg, a.IP), netnsAlive(a.NetNS))
	}

	// Stopping the pool releases every entry.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if left := poolFiles(t, n); len(left) != 0 || n.Pooled() != 0 {
		t.Errorf("pool after RunPool returned: %d ready, records %+v", n.Pooled(), left)
	}
	for _, e := range refilled {
		if netnsAlive(e.NetNS) || ipHeld(cfg, e.IP) {
			t.Errorf("released entry %+v: netns alive %v, IP held %v", e, netnsAlive(e.NetNS), ipHeld(cfg, e.IP))
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "netns")); len(ents) != 0 {
		t.Errorf("netns dir after everything went: %v", ents)
	}

	// Without a pool, Reserve makes a namespace of its own, as before.
	r, err := n.Reserve(ctx, "cold-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Teardown(context.Background(), "cold-b") })
	if r.IP != "" || r.CNIID != "" {
		t.Errorf("Reserve without a pool = %+v: want a fresh namespace, no IP yet", r)
	}
}

// TestPoolAfterAgentCrash is a Network whose process died without
// releasing its pool (records name a dead owner): one entry free, one
// taken by a replica whose record was written just before the crash, so
// the entry's record is still there. The next Network releases the free
// one, only drops the record of the taken one, and leaves alone the
// entries of a Network that still runs.
func TestPoolAfterAgentCrash(t *testing.T) {
	needCNI(t)
	ctx := testContext(t)
	cfg := testCNIConfig(t, 245)
	cfg.PoolSize, cfg.PoolRefillDelay = 2, 0
	dead, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Filled by hand: a RunPool would release them when stopped.
	for range 2 {
		if err := dead.fillOne(ctx); err != nil {
			t.Fatal(err)
		}
	}
	entries := poolFiles(t, dead)
	free, taken := entries[0], entries[1]
	replica := Attachment{ID: "crash-kept", Mode: ModeCNI, NetNS: taken.NetNS, IP: taken.IP, CNIID: taken.ID}
	if err := dead.records.put(replica); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Teardown(context.Background(), replica.ID) })
	// The owner is gone: no process runs with this start time.
	for _, e := range entries {
		e.Owner.Start++
		if err := dead.pool.records.put(e); err != nil {
			t.Fatal(err)
		}
	}

	// A live Network on the same state dir keeps its own entries.
	live, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runPool(t, live)

	next, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := next.RemoveOrphans(ctx, func(id string) bool { return id == replica.ID })
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 0 {
		t.Errorf("RemoveOrphans removed %v, want nothing (pool entries are no replica's)", removed)
	}
	if netnsAlive(free.NetNS) || ipHeld(cfg, free.IP) {
		t.Errorf("dead agent's free entry: netns alive %v, IP held %v; want released", netnsAlive(free.NetNS), ipHeld(cfg, free.IP))
	}
	if !netnsAlive(taken.NetNS) || !ipHeld(cfg, taken.IP) {
		t.Errorf("entry a replica took: netns alive %v, IP held %v; want kept", netnsAlive(taken.NetNS), ipHeld(cfg, taken.IP))
	}
	left := poolFiles(t, next)
	if len(left) != 2 || slices.ContainsFunc(left, func(e poolEntry) bool { return e.Owner.Token != live.pool.owner.Token }) {
		t.Errorf("pool records after cleanup: %+v; want the live Network's 2 only", left)
	}
	for _, e := range left {
		if !netnsAlive(e.NetNS) {
			t.Errorf("live Network's entry %s lost its netns", e.ID)
		}
	}
	if live.Pooled() != 2 {
		t.Errorf("live Network holds %d, want 2", live.Pooled())
	}

	// The replica in the taken entry tears down as any other, freeing the
	// entry's IP.
	if err := next.Teardown(ctx, replica.ID); err != nil {
		t.Fatal(err)
	}
	if netnsAlive(taken.NetNS) || ipHeld(cfg, taken.IP) {
		t.Errorf("after Teardown of the replica: netns alive %v, IP held %v", netnsAlive(taken.NetNS), ipHeld(cfg, taken.IP))
	}

	// A RunPool of a restarted agent also releases stale entries before
	// filling: leave one behind again and start a pool.
	if err := dead.fillOne(ctx); err != nil {
		t.Fatal(err)
	}
	stale := poolFiles(t, dead)
	i := slices.IndexFunc(stale, func(e poolEntry) bool { return e.Owner.Token == dead.pool.owner.Token })
	e := stale[i]
	e.Owner.Start++
	if err := dead.pool.records.put(e); err != nil {
		t.Fatal(err)
	}
	runPool(t, next)
	if netnsAlive(e.NetNS) || ipHeld(cfg, e.IP) {
		t.Errorf("stale entry after a new RunPool: netns alive %v, IP held %v", netnsAlive(e.NetNS), ipHeld(cfg, e.IP))
	}
	if _, err := next.pool.records.get(e.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("stale entry's record: %v", err)
	}
}

func TestPoolOff(t *testing.T) {
	needCNI(t)
	cfg := testCNIConfig(t, 246)
	cfg.PoolSize = 0
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RunPool(testContext(t)); err != nil {
		t.Fatalf("RunPool with PoolSize 0: %v", err)
	}
	if err := n.WaitPool(testContext(t)); err != nil || n.Pooled() != 0 {
		t.Fatalf("WaitPool without a pool = %v, %d pooled", err, n.Pooled())
	}
}

func TestReplicaNamespacesLeavesOutThePool(t *testing.T) {
	dir := t.TempDir()
	if got, err := ReplicaNamespaces(dir); err != nil || len(got) != 0 {
		t.Fatalf("empty state dir: %v, %v; want none", got, err)
	}
	for _, d := range []string{"netns", "pool"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"cni-replica", "cni-pooled"} {
		if err := os.WriteFile(filepath.Join(dir, "netns", name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := poolEntry{Attachment: Attachment{ID: "surge-pool-1", Mode: ModeCNI, NetNS: filepath.Join(dir, "netns", "cni-pooled")}}
	if err := (store[poolEntry]{dir: filepath.Join(dir, "pool")}).put(e); err != nil {
		t.Fatal(err)
	}
	got, err := ReplicaNamespaces(dir)
	if err != nil || len(got) != 1 || got[0] != "cni-replica" {
		t.Errorf("ReplicaNamespaces = %v, %v; want [cni-replica]", got, err)
	}
}
