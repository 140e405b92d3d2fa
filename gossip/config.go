package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/surgeplatform/surge/internal/clock"
)

// Role is what a member does in the cluster. It travels in NodeMeta so that
// gateways can tell agents (which run replicas and own a pod subnet) from
// other gateways and servers.
type Role string

// Roles a member can have.
const (
	RoleAgent   Role = "agent"
	RoleGateway Role = "gateway"
	RoleServer  Role = "server"
)

func (r Role) valid() bool {
	return r == RoleAgent || r == RoleGateway || r == RoleServer
}

// NodeMeta is what a member tells every other member about itself. It is
// sent as JSON in memberlist's node metadata, which is limited to
// memberlist.MetaMaxSize (512) bytes including the few bytes Gossip adds;
// Config.Validate and UpdateMeta reject a larger one.
type NodeMeta struct {
	// Name is the member's name; Gossip sets it to Config.NodeName.
	Name string `json:"n"`
	// Role is the member's role; Gossip sets it to Config.Role.
	Role Role `json:"r"`
	// Address is the node's routable address, the next hop for PodCIDR.
	Address netip.Addr `json:"a,omitzero"`
	// PodCIDR is the subnet the node's replicas take addresses from; peers
	// add a route to it through Address. Unset on gateways and servers, and
	// on agents that fell back to host networking.
	PodCIDR netip.Prefix `json:"p,omitzero"`
	// CPUMillis and MemoryBytes are the node's capacity.
	CPUMillis   int64 `json:"c,omitempty"`
	MemoryBytes int64 `json:"m,omitempty"`
	// APIPort is the port of the agent's API on Address; 0 when none.
	APIPort uint16 `json:"ap,omitempty"`
}

// validate reports every bad field of m, named under prefix.
func (m NodeMeta) validate(prefix string) []error {
	var errs []error
	if m.Name == "" {
		errs = append(errs, fmt.Errorf("%s.Name is empty", prefix))
	}
	if !m.Role.valid() {
		errs = append(errs, fmt.Errorf("%s.Role %q is not agent, gateway or server", prefix, m.Role))
	}
	if m.PodCIDR.IsValid() && m.PodCIDR != m.PodCIDR.Masked() {
		errs = append(errs, fmt.Errorf("%s.PodCIDR %s has host bits set (want %s)", prefix, m.PodCIDR, m.PodCIDR.Masked()))
	}
	if m.CPUMillis < 0 {
		errs = append(errs, fmt.Errorf("%s.CPUMillis %d is negative", prefix, m.CPUMillis))
	}
	if m.MemoryBytes < 0 {
		errs = append(errs, fmt.Errorf("%s.MemoryBytes %d is negative", prefix, m.MemoryBytes))
	}
	if n := maxEncodedMetaLen(m); n > memberlist.MetaMaxSize {
		errs = append(errs, fmt.Errorf("%s is %d bytes encoded, over memberlist's limit of %d (shorten Name)", prefix, n, memberlist.MetaMaxSize))
	}
	return errs
}

// Config configures one gossip member. Make it with DefaultConfig, set
// NodeName, Key and Meta, and hand it to New, which copies it.
//
// The timing values are memberlist's (see memberlist.Config for the
// algorithm: SWIM with Lifeguard's suspicion, https://arxiv.org/abs/1707.00788).
// The defaults are tuned for a LAN where a dead node should stop getting
// traffic within a few seconds: with N members, a dead node is first
// suspected after about ProbeInterval+ProbeTimeout and declared dead
// SuspicionMult*max(1,log10(N))*ProbeInterval later when other members
// confirm (up to SuspicionMaxTimeoutMult times that when they do not): 1.5
// to 6 s for 3 to 10 nodes, 3 to 12 s for 100. The price is twice
// memberlist's probe traffic (one small UDP round trip per member every
// ProbeInterval) and more false suspicion of a member that stalls (long GC
// pause, CPU starvation, a lossy link) — which is why SuspicionMaxTimeoutMult
// stays generous, and why a suspect member keeps its endpoints until it is
// declared dead.
type Config struct {
	// NodeName is the member's name, unique in the cluster. Default: the
	// host name.
	NodeName string
	// Role is what this member does. Default: RoleAgent.
	Role Role

	// BindAddr and BindPort are where the member listens, on UDP and TCP
	// alike. BindPort 0 picks a free port (tests). Default 0.0.0.0:7946.
	// Both are ignored when Transport is set.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members dial. Default:
	// the bind address (or, bound to 0.0.0.0, the first private address) and
	// the bound port.
	AdvertiseAddr string
	AdvertisePort int

	// Meta is what this member tells the others; Name and Role are filled
	// from NodeName and Role.
	Meta NodeMeta

	// Key is the cluster's gossip key, KeySize random bytes that the first
	// server makes (and every member obtains from the API with its own
	// credentials): every packet and stream is encrypted and authenticated
	// with it (AES-256-GCM), and members without it can neither join nor
	// read. Required.
	Key []byte
	// Label is prefixed to every packet and stream, and authenticated with
	// the key, so that another cluster's members on the same network (a
	// second Surge, or a Consul) are turned away before decryption is even
	// tried. Default "surge"; at most 255 bytes.
	Label string

	// ProbeInterval is how often a member probes a random other member.
	// Default 500ms (memberlist's LAN default is 1s): detection twice as
	// fast, for twice the probe traffic.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its ack before
	// asking others to probe indirectly; the 99th percentile of RTT plus
	// scheduling slack. Default 250ms.
	ProbeTimeout time.Duration
	// IndirectChecks is how many members are asked to probe indirectly when
	// a direct probe fails; more makes a lossy link less likely to cause a
	// false suspicion. Default 3.
	IndirectChecks int
	// SuspicionMult scales how long a member stays suspect before it is
	// declared dead (see Config). Default 3 (LAN default 4): a dead node is
	// gone about a second sooner; a paused one has that much less time to
	// refute.
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion time when no other member
	// confirms it, as a multiple of the base. Default 4.
	SuspicionMaxTimeoutMult int
	// GossipInterval and GossipNodes: every GossipInterval, queued messages
	// (membership changes and endpoint events) go to GossipNodes random
	// members. Defaults 100ms and 3: an endpoint reaches a 100-node cluster
	// in well under a second, for a few small packets a second per member.
	GossipInterval time.Duration
	GossipNodes    int
	// RetransmitMult: each message is sent RetransmitMult*ceil(log10(N+1))
	// times by each member that learns it. Default 4.
	RetransmitMult int
	// PushPullInterval is how often a member syncs its whole state (members
	// and ready endpoints) with a random other member over TCP, repairing
	// lost messages. Default 15s (LAN default 30s); the cost grows with the
	// number of endpoints.
	PushPullInterval time.Duration
	// StreamTimeout bounds dialing and each read and write of a TCP sync,
	// and so each address Join tries. Default 5s.
	StreamTimeout time.Duration
	// GossipToTheDeadTime is how long a dead member is still sent gossip,
	// giving it a chance to refute a false death. Default 15s.
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long after its death a member's name can
	// be taken by a member at another address (an agent restarted with a
	// new IP). Default 30s; 0 would refuse it for good.
	DeadNodeReclaimTime time.Duration

	// ReconnectInterval is how often Run tries to rejoin one member that
	// died, or the Join addresses when this member is alone, so that the
	// sides of a partition that outlived GossipToTheDeadTime merge again
	// once it heals. Default 2s: a healed partition merges within it, for
	// one dial per interval while anyone is dead.
	ReconnectInterval time.Duration
	// LeaveTimeout bounds the leave broadcast when Run's ctx ends. Default
	// 3s.
	LeaveTimeout time.Duration
	// DeadRetention is how long Members keeps reporting a dead or left
	// member, Run tries to reconnect to a dead one, and the endpoints of a
	// member that is not alive are kept in case it comes back. Default 30m.
	DeadRetention time.Duration

	// Transport replaces memberlist's UDP/TCP transport: the in-memory
	// network of package gossiptest, or a transport whose sockets live in
	// another network namespace. Nil uses BindAddr and BindPort.
	Transport memberlist.Transport
	// Logger receives Gossip's and memberlist's logs. Default slog.Default.
	Logger *slog.Logger
	// Clock is where Gossip reads the time (endpoint sequence numbers, how
	// long a member has been dead, the leave's deadline) and gets the
	// ticker of its reconnect loop. Default: the wall clock. memberlist
	// keeps its own timers (probes, suspicion), which no Clock drives.
	Clock clock.Clock
}

// KeySize is the size of a gossip key, in bytes: AES-256.
const KeySize = 32

// DefaultConfig returns a Config with every default filled in, but no
// Key: the caller must set one.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:                host,
		Role:                    RoleAgent,
		BindAddr:                "0.0.0.0",
		BindPort:                7946,
		Label:                   "surge",
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            250 * time.Millisecond,
		IndirectChecks:          3,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 4,
		GossipInterval:          100 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          4,
		PushPullInterval:        15 * time.Second,
		StreamTimeout:           5 * time.Second,
		GossipToTheDeadTime:     15 * time.Second,
		DeadNodeReclaimTime:     30 * time.Second,
		ReconnectInterval:       2 * time.Second,
		LeaveTimeout:            3 * time.Second,
		DeadRetention:           30 * time.Minute,
		Logger:                  slog.Default(),
		Clock:                   clock.Real(),
	}
}

// withDefaults returns c with what a caller who built the Config by hand
// left zero filled in, and the fields derived from others. It is the one
// place defaults are applied.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.NodeName == "" {
		c.NodeName = d.NodeName
	}
	if c.Role == "" {
		c.Role = d.Role
	}
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	if c.AdvertisePort == 0 {
		c.AdvertisePort = c.BindPort
	}
	if c.Label == "" {
		c.Label = d.Label
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setInt(&c.IndirectChecks, d.IndirectChecks)
	setInt(&c.SuspicionMult, d.SuspicionMult)
	setInt(&c.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setDur(&c.GossipInterval, d.GossipInterval)
	setInt(&c.GossipNodes, d.GossipNodes)
	setInt(&c.RetransmitMult, d.RetransmitMult)
	setDur(&c.PushPullInterval, d.PushPullInterval)
	setDur(&c.StreamTimeout, d.StreamTimeout)
	setDur(&c.GossipToTheDeadTime, d.GossipToTheDeadTime)
	setDur(&c.ReconnectInterval, d.ReconnectInterval)
	setDur(&c.LeaveTimeout, d.LeaveTimeout)
	setDur(&c.DeadRetention, d.DeadRetention)
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	c.Clock = clock.Or(c.Clock)
	if c.Meta.Name == "" {
		c.Meta.Name = c.NodeName
	}
	if c.Meta.Role == "" {
		c.Meta.Role = c.Role
	}
	return c
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("gossip: invalid config")

// Validate reports every bad field at once, each with its name and value.
// New calls it after filling defaults; call it directly to check a Config
// built from flags before starting anything.
func (c Config) Validate() error {
	errs := c.problems()
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// problems is every bad field of c, each named with its value.
func (c Config) problems() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeName == "" {
		add("NodeName is empty")
	}
	if !c.Role.valid() {
		add("Role %q is not agent, gateway or server", c.Role)
	}
	if c.Transport == nil {
		if _, err := netip.ParseAddr(c.BindAddr); err != nil {
			add("BindAddr %q is not an IP address", c.BindAddr)
		}
		if c.BindPort < 0 || c.BindPort > 65535 {
			add("BindPort %d is out of range 0-65535", c.BindPort)
		}
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			add("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
		}
		if c.AdvertisePort <= 0 || c.AdvertisePort > 65535 {
			add("AdvertisePort %d is out of range 1-65535 (set it, or BindPort, with AdvertiseAddr)", c.AdvertisePort)
		}
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		add("AdvertisePort %d is out of range 0-65535", c.AdvertisePort)
	}
	if len(c.Key) != KeySize {
		add("Key is %d bytes, want %d (the cluster's gossip key)", len(c.Key), KeySize)
	}
	if c.Label == "" || len(c.Label) > memberlist.LabelMaxSize {
		add("Label %q must be 1-%d bytes", c.Label, memberlist.LabelMaxSize)
	}
	meta := c.Meta
	if meta.Name == "" {
		meta.Name = c.NodeName
	} else if meta.Name != c.NodeName {
		add("Meta.Name %q differs from NodeName %q (leave it empty)", meta.Name, c.NodeName)
	}
	if meta.Role == "" {
		meta.Role = c.Role
	} else if meta.Role != c.Role {
		add("Meta.Role %q differs from Role %q (leave it empty)", meta.Role, c.Role)
	}
	if c.NodeName != "" && c.Role.valid() {
		errs = append(errs, meta.validate("Meta")...)
	}
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			add("%s %v must be positive", name, d)
		}
	}
	pos("ProbeInterval", c.ProbeInterval)
	pos("ProbeTimeout", c.ProbeTimeout)
	pos("GossipInterval", c.GossipInterval)
	pos("PushPullInterval", c.PushPullInterval)
	pos("StreamTimeout", c.StreamTimeout)
	pos("GossipToTheDeadTime", c.GossipToTheDeadTime)
	pos("ReconnectInterval", c.ReconnectInterval)
	pos("LeaveTimeout", c.LeaveTimeout)
	pos("DeadRetention", c.DeadRetention)
	if c.ProbeTimeout >= c.ProbeInterval {
		add("ProbeTimeout %v must be shorter than ProbeInterval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.DeadNodeReclaimTime < 0 {
		add("DeadNodeReclaimTime %v is negative", c.DeadNodeReclaimTime)
	}
	atLeast := func(name string, v, min int) {
		if v < min {
			add("%s %d must be at least %d", name, v, min)
		}
	}
	atLeast("IndirectChecks", c.IndirectChecks, 0)
	atLeast("SuspicionMult", c.SuspicionMult, 1)
	atLeast("SuspicionMaxTimeoutMult", c.SuspicionMaxTimeoutMult, 1)
	atLeast("GossipNodes", c.GossipNodes, 1)
	atLeast("RetransmitMult", c.RetransmitMult, 1)
	if c.Logger == nil {
		add("Logger is nil")
	}
	if c.Clock == nil {
		add("Clock is nil")
	}
	return errs
}
