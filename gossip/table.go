package gossip

import (
	"cmp"
	"maps"
	"slices"
)

// table holds, for every origin member, what this member knows of the
// origin's endpoints. It is the pure core of endpoint gossip: no I/O, no
// clock, no locks.
//
// Each origin's view is a state-based CRDT (a snapshot plus a last-writer-
// wins map of later changes), so views merge the same way in any order and
// any number of times, and lost or reordered messages are repaired by the
// next full sync:
//
//   - base is a sequence number at which the view is a complete snapshot of
//     the origin: every endpoint the origin had ready at base is in entries
//     with Seq <= base, and nothing else with Seq <= base is.
//   - entries with Seq > base are changes learned since, one per key, the
//     newest winning; a Gone with Seq > base is kept as a tombstone so that
//     an older Ready cannot come back.
//
// The origin itself always has base = its newest Seq and no tombstones.
// Merging two views of one origin takes B = max(bases): entries with
// Seq <= B are believed only from a side whose base is B, later ones from
// either side, newest per key; tombstones with Seq <= B are then dropped.
// A restarted origin starts at a new, higher base (its epoch, carried in its
// metadata), which removes everything of its earlier life.
type table struct {
	views map[string]*view
}

type view struct {
	base    uint64
	entries map[EndpointKey]EndpointEvent
}

// change is the visible effect of an operation on one endpoint: before and
// after are the Ready entries, or zero (Type 0) where there is none.
type change struct {
	before, after EndpointEvent
}

func newTable() *table { return &table{views: map[string]*view{}} }

func (t *table) view(origin string) *view {
	v := t.views[origin]
	if v == nil {
		v = &view{entries: map[EndpointKey]EndpointEvent{}}
		t.views[origin] = v
	}
	return v
}

// apply records one event of ev.Node learned from gossip. It reports
// whether the event was news (then it is worth passing on), and the visible
// change.
func (t *table) apply(ev EndpointEvent) (news bool, ch []change) {
	v := t.view(ev.Node)
	if ev.Seq <= v.base {
		return false, nil // covered by the snapshot, or older
	}
	k := ev.Key()
	cur, ok := v.entries[k]
	if ok && cur.Seq >= ev.Seq {
		return false, nil
	}
	v.entries[k] = ev
	return true, diff(ready(cur), ready(ev))
}

// applyOwn records an event of the table's own member, which is the
// authority on it: the view stays a complete snapshot at ev.Seq.
func (t *table) applyOwn(ev EndpointEvent) []change {
	v := t.view(ev.Node)
	k := ev.Key()
	cur := v.entries[k]
	if ev.Type == EndpointReady {
		v.entries[k] = ev
	} else {
		delete(v.entries, k)
	}
	v.base = max(v.base, ev.Seq)
	return diff(ready(cur), ready(ev))
}

// merge joins a remote view of origin into the local one and returns the
// visible changes, sorted by key. Remote entries of another origin, or of
// no known type, are ignored.
func (t *table) merge(origin string, rbase uint64, rentries []EndpointEvent) []change {
	v := t.view(origin)
	b := max(v.base, rbase)
	next := make(map[EndpointKey]EndpointEvent, len(v.entries))
	take := func(e EndpointEvent, sideBase uint64) {
		if e.Seq <= b && sideBase != b {
			return // the other side's snapshot is newer and decides
		}
		if cur, ok := next[e.Key()]; ok && cur.Seq >= e.Seq {
			return
		}
		next[e.Key()] = e
	}
	for _, e := range v.entries {
		take(e, v.base)
	}
	for _, e := range rentries {
		if e.Node != origin || (e.Type != EndpointReady && e.Type != EndpointGone) {
			continue
		}
		take(e, rbase)
	}
	maps.DeleteFunc(next, func(_ EndpointKey, e EndpointEvent) bool {
		return e.Type == EndpointGone && e.Seq <= b
	})
	var ch []change
	for k := range keysOf(v.entries, next) {
		ch = append(ch, diff(ready(v.entries[k]), ready(next[k]))...)
	}
	v.base, v.entries = b, next
	sortChanges(ch)
	return ch
}

// floor tells the table that origin started afresh at epoch with no
// endpoints: everything older is of an earlier life.
func (t *table) floor(origin string, epoch uint64) []change {
	return t.merge(origin, epoch, nil)
}

// drop forgets origin.
func (t *table) drop(origin string) { delete(t.views, origin) }

// ready returns the origin's ready endpoints, sorted by key.
func (t *table) ready(origin string) []EndpointEvent {
	v := t.views[origin]
	if v == nil {
		return nil
	}
	var out []EndpointEvent
	for _, e := range v.entries {
		if e.Type == EndpointReady {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b EndpointEvent) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// snapshot returns origin's view as it is sent to other members: base and
// every entry, tombstones included, sorted by key.
func (t *table) snapshot(origin string) (base uint64, entries []EndpointEvent) {
	v := t.views[origin]
	if v == nil {
		return 0, nil
	}
	entries = slices.Collect(maps.Values(v.entries))
	slices.SortFunc(entries, func(a, b EndpointEvent) int { return compareKeys(a.Key(), b.Key()) })
	return v.base, entries
}

// origins returns the names of every origin with a view, sorted.
func (t *table) origins() []string {
	return slices.Sorted(maps.Keys(t.views))
}

func ready(e EndpointEvent) EndpointEvent {
	if e.Type != EndpointReady {
		return EndpointEvent{}
	}
	return e
}

// diff returns the visible change from before to after, if any: a Ready
// that appeared, moved to another address, or went away. A newer Ready at
// the same address changes nothing a router sees.
func diff(before, after EndpointEvent) []change {
	switch {
	case before.Type == 0 && after.Type == 0:
		return nil
	case before.Type != 0 && after.Type != 0 && before.IP == after.IP && before.Port == after.Port &&
		before.Function == after.Function && before.Revision == after.Revision:
		return nil
	}
	return []change{{before: before, after: after}}
}

func keysOf(a, b map[EndpointKey]EndpointEvent) map[EndpointKey]struct{} {
	out := make(map[EndpointKey]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}

func compareKeys(a, b EndpointKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Replica, b.Replica))
}

func sortChanges(ch []change) {
	key := func(c change) EndpointKey {
		if c.after.Type != 0 {
			return c.after.Key()
		}
		return c.before.Key()
	}
	slices.SortFunc(ch, func(a, b change) int { return compareKeys(key(a), key(b)) })
}
