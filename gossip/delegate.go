package gossip

import (
	"github.com/hashicorp/memberlist"
)

// delegate is Gossip as memberlist sees it. Memberlist calls it from its
// own goroutines (packet handler, stream handlers, probe and gossip
// schedulers), the EventDelegate methods while holding its node lock: so
// the methods take g.mu, never block on anything else, and call no
// memberlist method that locks. They only queue events; Run delivers them.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.g.meta.Load()
	if len(b) > limit {
		// Validated against MetaMaxSize before it is stored; memberlist
		// panics on more, so never hand it over.
		d.g.log.Error("gossip metadata over the limit; sending none", "len", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate: an endpoint event from another
// member. News is applied, shown to the Handler if its origin is visible,
// and passed on.
func (d *delegate) NotifyMsg(b []byte) {
	g := d.g
	ev, err := decodeEvent(b)
	if err != nil {
		g.log.Debug("gossip message skipped", "err", err)
		return
	}
	if ev.Node == g.cfg.NodeName {
		return // this member is the authority on its own endpoints
	}
	msg := append([]byte(nil), b...) // memberlist reuses b
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	news, ch := g.table.apply(ev)
	if !news {
		return
	}
	if g.visible(ev.Node) {
		g.emitChanges(ch)
	}
	g.queue.QueueBroadcast(newBroadcast(ev, msg))
}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate: this member's endpoints and
// those it knows of alive members.
func (d *delegate) LocalState(join bool) []byte {
	g := d.g
	g.mu.Lock()
	var s wireState
	for _, o := range g.table.origins() {
		if !g.visible(o) {
			continue
		}
		base, entries := g.table.snapshot(o)
		s.Views = append(s.Views, wireView{Node: o, Base: base, Entries: entries})
	}
	g.mu.Unlock()
	b, err := encodeState(s)
	if err != nil {
		g.log.Error("encode gossip state", "err", err)
		return nil
	}
	return b
}

// MergeRemoteState implements memberlist.Delegate. Memberlist has merged
// the remote member list (and called NotifyJoin for the new ones) before.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	g := d.g
	s, err := decodeState(buf)
	if err != nil {
		g.log.Debug("gossip state skipped", "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	for _, v := range s.Views {
		if v.Node == g.cfg.NodeName || v.Node == "" {
			continue
		}
		ch := g.table.merge(v.Node, v.Base, v.Entries)
		if g.visible(v.Node) {
			g.emitChanges(ch)
		}
	}
}

// NotifyJoin implements memberlist.EventDelegate: a member appeared or
// came back.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	g := d.g
	if n.Name == g.cfg.NodeName {
		return
	}
	m, wm := g.member(n)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joined(m, wm)
}

// NotifyUpdate implements memberlist.EventDelegate: a member's metadata
// changed. A new epoch means it restarted: its old endpoints go.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	g := d.g
	if n.Name == g.cfg.NodeName {
		return
	}
	m, wm := g.member(n)
	g.mu.Lock()
	defer g.mu.Unlock()
	mi := g.members[n.Name]
	if mi == nil || !g.visible(n.Name) {
		g.joined(m, wm) // not seen to join
		return
	}
	mi.leaving = wm.Leaving
	if wm.Leaving && wm.NodeMeta == mi.m.Meta {
		return // only the leaving mark changed; NodeLeft follows
	}
	mi.m = m
	ch := g.floor(mi, wm.Epoch)
	g.emit(NodeEvent{Type: NodeUpdate, Member: m})
	g.emitChanges(ch)
}

// joined records a member that was not visible and now is: its endpoints
// of an earlier life are forgotten, and the ones already known are shown
// after the NodeJoin. mu must be held.
func (g *Gossip) joined(m Member, wm wireMeta) {
	mi := g.members[m.Name]
	if mi == nil {
		mi = &memberInfo{}
		g.members[m.Name] = mi
	}
	mi.m, mi.since, mi.leaving = m, g.clock.Now(), wm.Leaving
	g.countAlive()
	g.floor(mi, wm.Epoch) // nothing of m was visible: no change to show
	g.emit(NodeEvent{Type: NodeJoin, Member: m})
	for _, e := range g.table.ready(m.Name) {
		g.emit(e)
	}
}

// NotifyLeave implements memberlist.EventDelegate: a member was declared
// dead, or left. Its view is kept, hidden, in case it comes back.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	g := d.g
	if n.Name == g.cfg.NodeName {
		return
	}
	m, wm := g.member(n)
	g.mu.Lock()
	defer g.mu.Unlock()
	mi := g.members[n.Name]
	if mi == nil {
		mi = &memberInfo{}
		g.members[n.Name] = mi
	}
	typ := NodeDead
	m.State = MemberDead
	if mi.leaving || wm.Leaving {
		typ, m.State = NodeLeft, MemberLeft
	}
	mi.m, mi.since = m, g.clock.Now()
	g.countAlive()
	g.emit(NodeEvent{Type: typ, Member: m})
}

// floor applies a member's epoch once per epoch. mu must be held.
func (g *Gossip) floor(mi *memberInfo, epoch uint64) []change {
	if epoch == 0 || epoch == mi.epoch {
		return nil
	}
	mi.epoch = epoch
	return g.table.floor(mi.m.Name, epoch)
}

// countAlive recounts the members the transmit queue scales with. mu must
// be held.
func (g *Gossip) countAlive() {
	n := int64(1)
	for name := range g.members {
		if g.visible(name) {
			n++
		}
	}
	g.alive.Store(n)
}
