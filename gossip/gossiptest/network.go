// Package gossiptest has fakes for testing code that uses package gossip:
// an in-memory network that carries memberlist's packets and streams
// between members of one process (so tests need no ports and can cut a
// member off), and a Handler that records what it is told.
package gossiptest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network connects the Transports it makes, like memberlist's MockNetwork,
// but safe for concurrent use, with buffered delivery that never blocks a
// sender on a stopped member, and with Isolate to cut a member off. Packets
// are delivered in order but dropped when a receiver's buffer (1024
// packets) is full, as UDP would. The zero Network is ready to use.
type Network struct {
	mu       sync.Mutex
	byAddr   map[string]*Transport
	isolated map[string]bool
	port     int
}

// NewTransport returns a Transport with a fresh address (127.0.0.1 and a
// port no socket uses: nothing is bound) for gossip.Config.Transport.
func (n *Network) NewTransport() *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = map[string]*Transport{}
		n.isolated = map[string]bool{}
		n.port = 20000
	}
	n.port++
	return n.newTransportLocked(net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)))
}

// NewTransportAt returns a Transport at addr ("ip:port"), replacing a
// stopped one there: a member restarted at the same address.
func (n *Network) NewTransportAt(addr string) (*Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = map[string]*Transport{}
		n.isolated = map[string]bool{}
		n.port = 20000
	}
	if old := n.byAddr[addr]; old != nil && !old.isDown() {
		return nil, fmt.Errorf("gossiptest: address %s is in use", addr)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("gossiptest: address %q: %w", addr, err)
	}
	return n.newTransportLocked(addr), nil
}

func (n *Network) newTransportLocked(addr string) *Transport {
	t := &Transport{
		net:      n,
		addr:     addr,
		packetCh: make(chan *memberlist.Packet, 1024),
		streamCh: make(chan net.Conn, 16),
		down:     make(chan struct{}),
	}
	n.byAddr[addr] = t
	return t
}

// Isolate cuts the member at addr off from every other (isolated true) or
// connects it again: packets to and from it are dropped and dials fail, as
// in a network partition. The member itself keeps running.
func (n *Network) Isolate(addr string, isolated bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isolated == nil {
		n.isolated = map[string]bool{}
	}
	n.isolated[addr] = isolated
}

// peer returns the transport at to, if from may reach it.
func (n *Network) peer(from, to string) (*Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isolated[from] || n.isolated[to] {
		return nil, fmt.Errorf("gossiptest: %s cannot reach %s: isolated", from, to)
	}
	t := n.byAddr[to]
	if t == nil || t.isDown() {
		return nil, fmt.Errorf("gossiptest: dial %s: connection refused", to)
	}
	return t, nil
}

// Transport is one member's end of a Network. It implements
// memberlist.NodeAwareTransport.
type Transport struct {
	net      *Network
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	down     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr returns the transport's address, for gossip.Gossip.Join.
func (t *Transport) Addr() string { return t.addr }

func (t *Transport) isDown() bool {
	select {
	case <-t.down:
		return true
	default:
		return false
	}
}

type addr string

func (a addr) Network() string { return "gossiptest" }
func (a addr) String() string  { return string(a) }

// FinalAdvertiseAddr implements memberlist.Transport: the transport's own
// address, whatever was configured.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, 0, err
	}
	return net.ParseIP(host), p, nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, to string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: to})
}

// WriteToAddress implements memberlist.NodeAwareTransport. Like UDP, it
// succeeds whether or not the packet arrives.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.isDown() {
		return now, fmt.Errorf("gossiptest: write from stopped transport %s", t.addr)
	}
	dest, err := t.net.peer(t.addr, a.Addr)
	if err != nil {
		return now, nil // lost
	}
	p := &memberlist.Packet{Buf: bytes.Clone(b), From: addr(t.addr), Timestamp: now}
	select {
	case dest.packetCh <- p:
	default: // receiver's buffer is full: lost
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// IngestPacket implements memberlist.NodeAwareTransport.
func (t *Transport) IngestPacket(conn net.Conn, from net.Addr, now time.Time, shouldClose bool) error {
	if shouldClose {
		defer conn.Close()
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, conn); err != nil {
		return fmt.Errorf("gossiptest: read packet: %w", err)
	}
	if buf.Len() < 1 {
		return fmt.Errorf("gossiptest: empty packet from %s", from)
	}
	select {
	case t.packetCh <- &memberlist.Packet{Buf: buf.Bytes(), From: from, Timestamp: now}:
	default:
	}
	return nil
}

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(to string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: to}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport with a
// net.Pipe whose other end the destination accepts.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.isDown() {
		return nil, fmt.Errorf("gossiptest: dial from stopped transport %s", t.addr)
	}
	dest, err := t.net.peer(t.addr, a.Addr)
	if err != nil {
		return nil, err
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streamCh <- pipeConn{remote, addr(t.addr), addr(dest.addr)}:
		return pipeConn{local, addr(dest.addr), addr(t.addr)}, nil
	case <-dest.down:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("gossiptest: dial %s: not accepted", a.Addr)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// IngestStream implements memberlist.NodeAwareTransport.
func (t *Transport) IngestStream(conn net.Conn) error {
	select {
	case t.streamCh <- conn:
		return nil
	case <-t.down:
		conn.Close()
		return fmt.Errorf("gossiptest: transport %s stopped", t.addr)
	}
}

// Shutdown implements memberlist.Transport: the address stops answering.
func (t *Transport) Shutdown() error {
	t.once.Do(func() { close(t.down) })
	return nil
}

// pipeConn is a net.Pipe end with the members' addresses, which memberlist
// logs and checks.
type pipeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c pipeConn) LocalAddr() net.Addr  { return c.local }
func (c pipeConn) RemoteAddr() net.Addr { return c.remote }
