// Package gossip is how Surge's node agents, gateways and servers find each
// other and share what must not wait for etcd: which members are alive,
// each node's metadata (address, pod subnet, capacity), and which replica
// endpoints are ready. It wraps hashicorp/memberlist (SWIM failure
// detection, encrypted with a key derived from the cluster's join token).
//
// Endpoint events are broadcast by the agent that runs the replica, passed
// on by every member that learns them (as Serf does: memberlist itself only
// retransmits a message from its origin), and repaired by memberlist's
// periodic full state sync, which also hands a member that joins late the
// ready endpoints of every alive member. How views of one origin's
// endpoints merge is described on table.
//
// Every role (server, agent, gateway) joins with Start, which takes
// Options and returns a running member that Stop ends; the roles differ
// only in the values they pass. Start is made of the parts below, which
// tests use directly with a Config of their own (an in-memory transport,
// short timings): New binds the listeners and starts memberlist; Join
// contacts seeds; Run delivers events to the Handler and, when its ctx
// ends, leaves the cluster and stops everything. Leave and Close stop a
// member that is not run, or stop it early.
//
// Everything Gossip knows of other members it copies in memberlist's event
// callbacks, which run under memberlist's lock: the *Node pointers that
// memberlist.Members returns are rewritten in place and cannot be read
// without a data race (hashicorp/memberlist#306).
package gossip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/surgeplatform/surge/internal/clock"
)

// Errors returned by Gossip.
var (
	// ErrClosed: the member was stopped by Leave, Close or the end of Run.
	ErrClosed = errors.New("gossip: closed")
	// ErrJoin: Join reached none of the addresses it was given.
	ErrJoin = errors.New("gossip: join failed")
	// ErrRunning: Run was called twice.
	ErrRunning = errors.New("gossip: already running")
	// ErrInvalidEvent: Broadcast was given an event it cannot send.
	ErrInvalidEvent = errors.New("gossip: invalid endpoint event")
)

// Gossip is one member of the cluster's gossip. Its methods are safe for
// concurrent use.
type Gossip struct {
	cfg   Config
	log   *slog.Logger
	clock clock.Clock
	h     Handler
	ml    *memberlist.Memberlist
	// queue holds endpoint events to send or pass on; memberlist drains it
	// through delegate.GetBroadcasts.
	queue *memberlist.TransmitLimitedQueue
	// alive counts this member and the others alive, for the queue's
	// retransmit limit; an atomic because memberlist reads it while holding
	// its own locks.
	alive atomic.Int64
	// meta is the encoded metadata memberlist sends.
	meta atomic.Pointer[[]byte]
	// addr is this member's advertised gossip address.
	addr netip.AddrPort

	// lifeMu serializes Leave, Close and UpdateMeta against each other
	// (memberlist panics on Leave after Shutdown). It is never taken from a
	// memberlist callback.
	lifeMu sync.Mutex
	// done is closed when the member stops.
	done    chan struct{}
	running atomic.Bool

	// mu guards what follows. Memberlist callbacks take it, sometimes while
	// holding memberlist's own lock; so no memberlist method that locks may be
	// called with mu held.
	mu      sync.Mutex
	closed  bool
	seq     uint64 // the last Seq this member used
	epoch   uint64
	local   NodeMeta
	table   *table
	members map[string]*memberInfo // other members, by name
	orphans map[string]time.Time   // origins with a view but no member, since
	seeds   []string               // the addresses last given to Join
	pending []any                  // NodeEvent or EndpointEvent, for Run
	wake    chan struct{}          // signalled when pending grows
}

type memberInfo struct {
	m       Member
	epoch   uint64
	leaving bool      // its metadata said it is leaving
	since   time.Time // when m.State last changed
}

// New starts a member: it binds the gossip listeners (or uses
// cfg.Transport) and starts memberlist's goroutines, but contacts no one
// until Join. Call Run to receive events, and Run's ctx end, Leave or Close
// to stop it. h may be nil for a member that only wants Members.
//
// The listeners are created in the calling goroutine's network namespace.
func New(cfg Config, h Handler) (*Gossip, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "gossip", "node", cfg.NodeName),
		clock:   cfg.Clock,
		h:       h,
		done:    make(chan struct{}),
		table:   newTable(),
		members: map[string]*memberInfo{},
		orphans: map[string]time.Time{},
		wake:    make(chan struct{}, 1),
		local:   cfg.Meta,
	}
	g.alive.Store(1)
	g.epoch = g.nextSeq()
	g.table.floor(cfg.NodeName, g.epoch)
	meta, err := encodeMeta(wireMeta{NodeMeta: cfg.Meta, Epoch: g.epoch})
	if err != nil {
		return nil, fmt.Errorf("encode gossip metadata: %w", err)
	}
	g.meta.Store(&meta)
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(g.alive.Load()) },
		RetransmitMult: cfg.RetransmitMult,
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.Transport = cfg.Transport
	mc.Label = cfg.Label
	mc.SecretKey = slices.Clone(cfg.Key)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.IndirectChecks = cfg.IndirectChecks
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.RetransmitMult = cfg.RetransmitMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.StreamTimeout
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.Logger = newMemberlistLogger(g.log)
	d := &delegate{g}
	mc.Delegate = d
	mc.Events = d
	// Endpoint events are a format of Surge's own; a member of another
	// version that does not know it ignores it (see wire.go).
	mc.DelegateProtocolVersion = 1
	mc.DelegateProtocolMin = 1
	mc.DelegateProtocolMax = 1

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	g.ml = ml
	// Read before Join: until then no other member can make memberlist
	// rewrite the local node.
	g.addr = addrPort(ml.LocalNode())
	return g, nil
}

// Join contacts the given members ("host:port", or "host" for port
// Config.BindPort) one after another and syncs state with each that
// answers, which makes this member known to the cluster. It returns how
// many answered; it fails with ErrJoin only when none did. A member with
// another join token or label is refused by every one of them.
//
// ctx is checked between addresses; each attempt is bounded by
// Config.StreamTimeout.
func (g *Gossip) Join(ctx context.Context, addrs []string) (int, error) {
	if g.isClosed() {
		return 0, ErrClosed
	}
	if len(addrs) == 0 {
		return 0, fmt.Errorf("%w: no addresses", ErrJoin)
	}
	g.mu.Lock()
	g.seeds = slices.Clone(addrs)
	g.mu.Unlock()
	var errs []error
	n := 0
	for _, a := range addrs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		k, err := g.ml.Join([]string{a})
		n += k
		if err != nil {
			errs = append(errs, fmt.Errorf("join %s: %w", a, err))
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %w", ErrJoin, errors.Join(errs...))
	}
	for _, err := range errs {
		g.log.Warn("gossip seed did not answer", "err", err)
	}
	return n, nil
}

// Run delivers events to the Handler until ctx ends; then it leaves the
// cluster (see Leave; a leave that times out is logged, not returned: the
// others then declare this member dead instead) and returns nil after
// everything it started has stopped. It returns early, with nil, when
// Leave or Close stops the member, and ErrRunning if called twice.
//
// Alongside, every Config.ReconnectInterval, it tries to rejoin one member
// that died (so the two sides of a healed partition find each other again:
// memberlist alone gossips to the dead only for GossipToTheDeadTime), or
// the addresses last given to Join when this member is alone, and forgets
// what has been dead for longer than Config.DeadRetention. An attempt in
// progress when ctx ends delays the return by up to Config.StreamTimeout.
func (g *Gossip) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	mctx, stopMaintain := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { g.maintain(mctx) })
	defer func() {
		stopMaintain()
		wg.Wait()
	}()
	for {
		for _, ev := range g.takePending() {
			g.deliver(ev)
		}
		select {
		case <-ctx.Done():
			stopMaintain()
			wg.Wait()
			lctx, cancel := clock.WithTimeout(context.Background(), g.clock, g.cfg.LeaveTimeout)
			defer cancel()
			if err := g.Leave(lctx); err != nil && !errors.Is(err, ErrClosed) {
				g.log.Warn("left the cluster without telling it", "err", err)
			}
			return nil
		case <-g.done:
			return nil
		case <-g.wake:
		}
	}
}

// maintain reconnects and prunes every ReconnectInterval until ctx ends.
func (g *Gossip) maintain(ctx context.Context) {
	tick := g.clock.NewTicker(g.cfg.ReconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.done:
			return
		case <-tick.Chan():
			g.prune()
			g.reconnect()
		}
	}
}

// reconnect tries to join one random dead member, or the seeds when this
// member is alone.
func (g *Gossip) reconnect() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	var dead []string
	for _, mi := range g.members {
		if mi.m.State == MemberDead && mi.m.Addr.IsValid() {
			dead = append(dead, mi.m.Addr.String())
		}
	}
	alone := g.alive.Load() == 1
	seeds := g.seeds
	g.mu.Unlock()

	var addrs []string
	switch {
	case len(dead) > 0:
		addrs = []string{dead[rand.IntN(len(dead))]}
	case alone && len(seeds) > 0:
		addrs = seeds
	default:
		return
	}
	if n, err := g.ml.Join(addrs); err != nil {
		g.log.Debug("gossip reconnect failed", "addrs", addrs, "err", err)
	} else {
		g.log.Info("gossip reconnected", "addrs", addrs, "answered", n)
	}
}

// Leave tells the cluster that this member is going, waits until that has
// been sent (or ctx's deadline, or Config.LeaveTimeout without one,
// passes), and stops the member. Others report it as NodeLeft at once
// rather than NodeDead after the suspicion timeout.
//
// Memberlist does not tell a leave from a death to the others' callbacks,
// so Leave first marks its metadata "leaving" and waits for that update to
// be sent out, then leaves; a member that misses the update reports
// NodeDead instead (either way, at once).
func (g *Gossip) Leave(ctx context.Context) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.isClosed() {
		return ErrClosed
	}
	timeout := g.timeout(ctx, g.cfg.LeaveTimeout)
	deadline := g.clock.Now().Add(timeout)
	g.mu.Lock()
	b, err := encodeMeta(wireMeta{NodeMeta: g.local, Epoch: g.epoch, Leaving: true})
	g.mu.Unlock()
	if err == nil {
		g.meta.Store(&b)
		err = g.ml.UpdateNode(timeout / 2)
	}
	if err != nil {
		g.log.Warn("could not mark this member as leaving; others may report it dead", "err", err)
	}
	err = g.ml.Leave(max(g.clock.Until(deadline), time.Millisecond))
	g.stop()
	if err != nil {
		return fmt.Errorf("leave gossip: %w", err)
	}
	return nil
}

// Close stops the member without telling the cluster, as a crash would:
// the others declare it dead after the suspicion timeout. It is safe to
// call more than once.
func (g *Gossip) Close() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.isClosed() {
		return nil
	}
	g.stop()
	return nil
}

// stop shuts memberlist down. lifeMu must be held.
func (g *Gossip) stop() {
	g.mu.Lock()
	g.closed = true
	g.pending = nil
	g.mu.Unlock()
	if err := g.ml.Shutdown(); err != nil {
		g.log.Warn("stop gossip", "err", err)
	}
	close(g.done)
}

// Done is closed when the member has stopped.
func (g *Gossip) Done() <-chan struct{} { return g.done }

func (g *Gossip) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// timeout turns ctx's deadline into memberlist's timeout argument. The
// deadline is read on the member's Clock, as clock.WithTimeout sets it (a
// context.WithTimeout's, on the wall clock, is the same when the Clock is
// the wall clock).
func (g *Gossip) timeout(ctx context.Context, def time.Duration) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return def
	}
	return max(g.clock.Until(dl), time.Millisecond)
}

// Broadcast tells every member that an endpoint of a replica on this node
// became ready or went away. It sets ev.Node and ev.Seq, delivers the event
// to this member's own Handler too, and returns at once: the event is sent
// with the next gossip rounds and repeated in every full sync while ready.
// Broadcast a Gone for every Ready before the replica stops serving.
func (g *Gossip) Broadcast(ev EndpointEvent) error {
	if err := ev.validate(); err != nil {
		return fmt.Errorf("%w %s/%s: %w", ErrInvalidEvent, ev.Namespace, ev.Replica, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	ev.Node = g.cfg.NodeName
	ev.Seq = g.nextSeq()
	msg, err := encodeEvent(ev)
	if err != nil {
		return fmt.Errorf("%w %s/%s: %w", ErrInvalidEvent, ev.Namespace, ev.Replica, err)
	}
	if len(msg) > maxEventLen {
		return fmt.Errorf("%w %s/%s: %d bytes encoded, over %d (names too long)", ErrInvalidEvent, ev.Namespace, ev.Replica, len(msg), maxEventLen)
	}
	g.emitChanges(g.table.applyOwn(ev))
	g.queue.QueueBroadcast(newBroadcast(ev, msg))
	return nil
}

// UpdateMeta changes this member's metadata (Name and Role may be left
// empty) and tells the cluster, waiting until the update has been sent to
// someone or ctx's deadline (Config.StreamTimeout without one) passes.
func (g *Gossip) UpdateMeta(ctx context.Context, m NodeMeta) error {
	if m.Name == "" {
		m.Name = g.cfg.NodeName
	}
	if m.Role == "" {
		m.Role = g.cfg.Role
	}
	var errs []error
	if m.Name != g.cfg.NodeName || m.Role != g.cfg.Role {
		errs = append(errs, fmt.Errorf("meta.Name %q and meta.Role %q must be %q and %q", m.Name, m.Role, g.cfg.NodeName, g.cfg.Role))
	}
	errs = append(errs, m.validate("meta")...)
	if len(errs) > 0 {
		return fmt.Errorf("update gossip metadata: %w", errors.Join(errs...))
	}
	b, err := encodeMeta(wireMeta{NodeMeta: m, Epoch: g.epoch})
	if err != nil {
		return fmt.Errorf("update gossip metadata: %w", err)
	}
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.isClosed() {
		return ErrClosed
	}
	g.mu.Lock()
	g.local = m
	g.mu.Unlock()
	g.meta.Store(&b)
	if err := g.ml.UpdateNode(g.timeout(ctx, g.cfg.StreamTimeout)); err != nil {
		return fmt.Errorf("update gossip metadata: %w", err)
	}
	return nil
}

// Members returns every member this one knows, itself included, sorted by
// name: alive ones, and dead and left ones for Config.DeadRetention.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := []Member{g.localLocked()}
	for _, mi := range g.members {
		out = append(out, mi.m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// LocalNode returns this member.
func (g *Gossip) LocalNode() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.localLocked()
}

func (g *Gossip) localLocked() Member {
	return Member{Name: g.cfg.NodeName, Addr: g.addr, Meta: g.local, State: MemberAlive}
}

// Endpoints returns every ready endpoint of this member and of alive
// members, as the Handler has been (or is about to be) told,
// sorted by node and key.
func (g *Gossip) Endpoints() []EndpointEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []EndpointEvent
	for _, o := range g.table.origins() {
		if g.visible(o) {
			out = append(out, g.table.ready(o)...)
		}
	}
	return out
}

// nextSeq returns the next sequence number: a hybrid logical clock that
// never repeats or goes back within a life, and starts a new life above the
// last one's as long as the wall clock did not step back across a restart.
// mu must be held, or g not yet shared.
func (g *Gossip) nextSeq() uint64 {
	now := g.clock.Now().UnixNano()
	g.seq = max(g.seq+1, uint64(max(now, 0)))
	return g.seq
}

// member copies a memberlist node as an alive Member, with the rest of
// its metadata. Call it only from memberlist's event callbacks (see the
// package comment). n.State is not used: memberlist v0.7.0 never sets it
// (it keeps the state in a field of its own that shadows it).
func (g *Gossip) member(n *memberlist.Node) (Member, wireMeta) {
	m := Member{Name: n.Name, Addr: addrPort(n), State: MemberAlive}
	wm, err := decodeMeta(n.Meta)
	if err != nil {
		g.log.Debug("gossip member with unreadable metadata", "member", n.Name, "err", err)
	}
	m.Meta = wm.NodeMeta
	return m, wm
}

func addrPort(n *memberlist.Node) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(ip.Unmap(), n.Port)
}

// visible reports whether origin's endpoints are shown: its own, and those
// of alive members. mu must be held.
func (g *Gossip) visible(origin string) bool {
	if origin == g.cfg.NodeName {
		return true
	}
	mi := g.members[origin]
	return mi != nil && mi.m.State == MemberAlive
}

// emit queues an event for Run. mu must be held.
func (g *Gossip) emit(ev any) {
	if g.closed || g.h == nil {
		return
	}
	g.pending = append(g.pending, ev)
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// emitChanges queues the endpoint events for visible changes. mu must be
// held, and the changes' origin visible.
func (g *Gossip) emitChanges(ch []change) {
	for _, c := range ch {
		if c.after.Type != 0 {
			g.emit(c.after)
			continue
		}
		gone := c.before
		gone.Type = EndpointGone
		g.emit(gone)
	}
}

func (g *Gossip) takePending() []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.pending
	g.pending = nil
	return p
}

func (g *Gossip) deliver(ev any) {
	switch ev := ev.(type) {
	case NodeEvent:
		g.h.OnNode(ev)
	case EndpointEvent:
		g.h.OnEndpoint(ev)
	}
}

// prune forgets members, and views of origins, that have not been alive
// for Config.DeadRetention.
func (g *Gossip) prune() {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, mi := range g.members {
		if !g.visible(name) && now.Sub(mi.since) > g.cfg.DeadRetention {
			delete(g.members, name)
			g.table.drop(name)
		}
	}
	for _, o := range g.table.origins() {
		if o == g.cfg.NodeName || g.members[o] != nil {
			delete(g.orphans, o)
			continue
		}
		since, ok := g.orphans[o]
		switch {
		case !ok:
			g.orphans[o] = now
		case now.Sub(since) > g.cfg.DeadRetention:
			delete(g.orphans, o)
			g.table.drop(o)
		}
	}
}

// broadcast is one endpoint event in the transmit queue. A newer event
// about the same endpoint of the same node replaces it there.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func newBroadcast(ev EndpointEvent, msg []byte) *broadcast {
	return &broadcast{name: ev.Node + "\x00" + ev.Namespace + "\x00" + ev.Replica, msg: msg}
}

func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}
func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
