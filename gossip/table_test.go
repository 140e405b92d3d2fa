package gossip

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cmpOpts = cmp.Options{
	cmp.AllowUnexported(change{}),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

func ev(typ EndpointEventType, replica string, port uint16, seq uint64) EndpointEvent {
	e := EndpointEvent{Type: typ, Namespace: "default", Function: "hello", Revision: "hello-00001",
		Replica: replica, Node: "n1", Seq: seq}
	if typ == EndpointReady {
		e.IP, e.Port = netip.MustParseAddr("10.244.1.5"), port
	}
	return e
}

func gone(e EndpointEvent) EndpointEvent {
	e.Type = EndpointGone
	return e
}

func TestTableApply(t *testing.T) {
	r1 := ev(EndpointReady, "r1", 8080, 10)
	r1moved := ev(EndpointReady, "r1", 9090, 12)
	r1same := ev(EndpointReady, "r1", 8080, 12)
	g1 := ev(EndpointGone, "r1", 0, 11)
	tests := []struct {
		name     string
		base     uint64
		events   []EndpointEvent
		wantNews []bool
		wantCh   [][]change
		wantRdy  []EndpointEvent
	}{
		{
			name:     "ready then gone",
			events:   []EndpointEvent{r1, g1},
			wantNews: []bool{true, true},
			wantCh:   [][]change{{{after: r1}}, {{before: r1}}},
		},
		{
			name:     "gone before ready wins when newer",
			events:   []EndpointEvent{g1, r1},
			wantNews: []bool{true, false},
			wantCh:   [][]change{nil, nil},
		},
		{
			name:     "duplicate is not news",
			events:   []EndpointEvent{r1, r1},
			wantNews: []bool{true, false},
			wantCh:   [][]change{{{after: r1}}, nil},
			wantRdy:  []EndpointEvent{r1},
		},
		{
			name:     "moved endpoint is a change, same address is not",
			events:   []EndpointEvent{r1, r1same, r1moved},
			wantNews: []bool{true, true, false},
			wantCh:   [][]change{{{after: r1}}, nil, nil},
			wantRdy:  []EndpointEvent{r1same},
		},
		{
			name:     "moved",
			events:   []EndpointEvent{r1, r1moved},
			wantNews: []bool{true, true},
			wantCh:   [][]change{{{after: r1}}, {{before: r1, after: r1moved}}},
			wantRdy:  []EndpointEvent{r1moved},
		},
		{
			name:     "at or below the snapshot base is old news",
			base:     10,
			events:   []EndpointEvent{r1, g1},
			wantNews: []bool{false, true},
			wantCh:   [][]change{nil, nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable()
			if tt.base > 0 {
				tb.floor("n1", tt.base)
			}
			for i, e := range tt.events {
				news, ch := tb.apply(e)
				if news != tt.wantNews[i] {
					t.Errorf("event %d: news = %v, want %v", i, news, tt.wantNews[i])
				}
				if diff := cmp.Diff(tt.wantCh[i], ch, cmpOpts); diff != "" {
					t.Errorf("event %d: changes (-want +got):\n%s", i, diff)
				}
			}
			if diff := cmp.Diff(tt.wantRdy, tb.ready("n1"), cmpOpts); diff != "" {
				t.Errorf("ready (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTableMerge(t *testing.T) {
	r1 := ev(EndpointReady, "r1", 8080, 10)
	r2 := ev(EndpointReady, "r2", 8080, 11)
	r3 := ev(EndpointReady, "r3", 8080, 20)
	g2 := ev(EndpointGone, "r2", 0, 21)
	tests := []struct {
		name      string
		localBase uint64
		local     []EndpointEvent // applied as gossip
		rbase     uint64
		remote    []EndpointEvent
		wantCh    []change
		wantRdy   []EndpointEvent
		wantBase  uint64
	}{
		{
			name:     "late joiner takes the snapshot",
			rbase:    11,
			remote:   []EndpointEvent{r1, r2},
			wantCh:   []change{{after: r1}, {after: r2}},
			wantRdy:  []EndpointEvent{r1, r2},
			wantBase: 11,
		},
		{
			name:     "newer snapshot removes what it lacks",
			local:    []EndpointEvent{r1, r2},
			rbase:    15,
			remote:   []EndpointEvent{r1},
			wantCh:   []change{{before: r2}},
			wantRdy:  []EndpointEvent{r1},
			wantBase: 15,
		},
		{
			name:     "older snapshot removes nothing newer",
			local:    []EndpointEvent{r1, r3},
			rbase:    11,
			remote:   []EndpointEvent{r1, r2},
			wantCh:   []change{{after: r2}},
			wantRdy:  []EndpointEvent{r1, r2, r3},
			wantBase: 11,
		},
		{
			name:      "older snapshot cannot resurrect",
			localBase: 15,
			local:     []EndpointEvent{r3},
			rbase:     11,
			remote:    []EndpointEvent{r1, r2},
			wantRdy:   []EndpointEvent{r3},
			wantBase:  15,
		},
		{
			name:     "tombstone after the snapshot wins over it",
			local:    []EndpointEvent{g2},
			rbase:    15,
			remote:   []EndpointEvent{r1, r2},
			wantCh:   []change{{after: r1}},
			wantRdy:  []EndpointEvent{r1},
			wantBase: 15,
		},
		{
			name:     "remote changes after its base are merged",
			local:    []EndpointEvent{r1, r2},
			rbase:    11,
			remote:   []EndpointEvent{r1, r2, r3, g2},
			wantCh:   []change{{before: r2}, {after: r3}},
			wantRdy:  []EndpointEvent{r1, r3},
			wantBase: 11,
		},
		{
			name:     "entries of another origin are ignored",
			rbase:    11,
			remote:   []EndpointEvent{func() EndpointEvent { e := r1; e.Node = "n2"; return e }()},
			wantBase: 11,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable()
			if tt.localBase > 0 {
				tb.floor("n1", tt.localBase)
			}
			for _, e := range tt.local {
				tb.apply(e)
			}
			ch := tb.merge("n1", tt.rbase, tt.remote)
			if diff := cmp.Diff(tt.wantCh, ch, cmpOpts); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRdy, tb.ready("n1"), cmpOpts); diff != "" {
				t.Errorf("ready (-want +got):\n%s", diff)
			}
			if base, _ := tb.snapshot("n1"); base != tt.wantBase {
				t.Errorf("base = %d, want %d", base, tt.wantBase)
			}
		})
	}
}

func TestTableFloorForgetsEarlierLife(t *testing.T) {
	tb := newTable()
	r1 := ev(EndpointReady, "r1", 8080, 10)
	tb.apply(r1)
	ch := tb.floor("n1", 100)
	if diff := cmp.Diff([]change{{before: r1}}, ch, cmpOpts); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if news, _ := tb.apply(r1); news {
		t.Error("an event of the earlier life was news after the floor")
	}
}

func TestTableTombstoneSurvivesMerge(t *testing.T) {
	tb := newTable()
	r1 := ev(EndpointReady, "r1", 8080, 20)
	tb.apply(gone(ev(EndpointReady, "r1", 8080, 21)))
	tb.merge("n1", 15, nil)
	if news, ch := tb.apply(r1); news || len(ch) > 0 {
		t.Errorf("a Ready older than a tombstone came back after a merge: news=%v changes=%v", news, ch)
	}
	base, entries := tb.snapshot("n1")
	other := newTable()
	other.apply(r1)
	other.merge("n1", base, entries)
	if got := other.ready("n1"); len(got) > 0 {
		t.Errorf("a merged tombstone did not remove an older Ready: %v", got)
	}
}

// TestTableConverges drives one origin through random changes and has
// replicas learn them through lossy, duplicated, reordered gossip, random
// merges with each other and occasional syncs with the origin. Then every
// event ever sent reaches every replica, in random order: each must hold
// exactly the origin's ready set, so no merge along the way lost or
// resurrected anything, and merging replicas with each other changes
// nothing more.
func TestTableConverges(t *testing.T) {
	for seed := range uint64(100) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			origin := newTable()
			const replicas = 4
			var tables [replicas]*table
			for i := range tables {
				tables[i] = newTable()
			}
			var seq uint64
			var sent, inflight []EndpointEvent
			for range 300 {
				switch r := rng.IntN(10); {
				case r < 5: // the origin changes an endpoint
					seq++
					e := ev(EndpointReady, fmt.Sprintf("r%d", rng.IntN(6)), uint16(8000+rng.IntN(3)), seq)
					if rng.IntN(2) == 0 {
						e = gone(e)
					}
					origin.applyOwn(e)
					sent = append(sent, e)
					inflight = append(inflight, e)
				case r < 8 && len(inflight) > 0: // a message arrives somewhere, maybe twice, maybe never
					i := rng.IntN(len(inflight))
					e := inflight[i]
					if rng.IntN(3) > 0 {
						inflight = append(inflight[:i], inflight[i+1:]...)
					}
					if rng.IntN(4) > 0 {
						tables[rng.IntN(replicas)].apply(e)
					}
				case r < 9: // two replicas sync
					a, b := tables[rng.IntN(replicas)], tables[rng.IntN(replicas)]
					base, entries := a.snapshot("n1")
					b.merge("n1", base, entries)
				default: // a replica syncs with the origin
					base, entries := origin.snapshot("n1")
					tables[rng.IntN(replicas)].merge("n1", base, entries)
				}
			}
			want := origin.ready("n1")
			for i, tb := range tables {
				for _, j := range rng.Perm(len(sent)) {
					tb.apply(sent[j])
				}
				if diff := cmp.Diff(want, tb.ready("n1"), cmpOpts); diff != "" {
					t.Errorf("replica %d differs from the origin (-want +got):\n%s", i, diff)
				}
			}
			for i, a := range tables {
				for _, b := range tables {
					base, entries := b.snapshot("n1")
					if ch := a.merge("n1", base, entries); len(ch) > 0 {
						t.Errorf("replica %d changed merging a converged replica: %v", i, ch)
					}
				}
			}
		})
	}
}
