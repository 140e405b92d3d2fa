package store_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

// TestNodeLeases: a heartbeat is stamped with the server's clock, apart
// from the Node; it brings a dead node back to life; the node's lease
// goes with the node.
func TestNodeLeases(t *testing.T) {
	st, clk := newStore(t)
	ctx := context.Background()
	if _, err := st.RenewNodeLease(ctx, "ghost"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("lease of an unregistered node: %v, want not found", err)
	}
	n, err := st.CreateNode(ctx, &api.Node{Metadata: api.ObjectMeta{Name: "n1"}, Status: api.NodeStatus{State: api.NodeAlive}},
		netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	rv := n.Metadata.ResourceVersion

	clk.Advance(5 * time.Second)
	got, err := st.RenewNodeLease(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Status.LastSeen.Equal(clk.Now()) || got.Status.State != api.NodeAlive {
		t.Errorf("renewed node: lastSeen %v, state %s; want %v, alive", got.Status.LastSeen, got.Status.State, clk.Now())
	}
	stored, err := store.Get[api.Node](ctx, st, api.Key{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if stored.Metadata.ResourceVersion != rv {
		t.Errorf("a beat of a live node rewrote the Node (version %s, was %s)", stored.Metadata.ResourceVersion, rv)
	}
	leases, err := st.NodeLeases(ctx)
	if err != nil || !leases["n1"].Equal(clk.Now()) {
		t.Fatalf("leases %v, %v; want n1 at %v", leases, err, clk.Now())
	}
	store.WithLease(stored, leases)
	if !stored.Status.LastSeen.Equal(clk.Now()) {
		t.Errorf("WithLease: lastSeen %v, want the lease's %v", stored.Status.LastSeen, clk.Now())
	}

	// Declared dead meanwhile: the next beat revives it.
	stored.Status.State = api.NodeDead
	if _, err := store.UpdateNodeStatus(ctx, st, stored); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if got, err = st.RenewNodeLease(ctx, "n1"); err != nil || got.Status.State != api.NodeAlive {
		t.Fatalf("beat of a dead node: %v, %v; want it alive", got, err)
	}
	if stored, _ = store.Get[api.Node](ctx, st, api.Key{Name: "n1"}); stored.Status.State != api.NodeAlive {
		t.Errorf("stored state %s after the beat, want alive", stored.Status.State)
	}

	if err := st.DeleteNode(ctx, "n1", ""); err != nil {
		t.Fatal(err)
	}
	if leases, _ := st.NodeLeases(ctx); len(leases) != 0 {
		t.Errorf("leases after the node was deleted: %v, want none", leases)
	}
}
