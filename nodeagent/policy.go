package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// PolicyConfig configures the network policy the agent keeps around its
// replicas (see network.BuildPolicy): what a replica may reach, enforced
// by iptables chains the agent owns.
type PolicyConfig struct {
	// GatewayPorts are the TCP ports the gateways listen on. Replicas
	// reach the node's own addresses, the other nodes' and the control
	// plane's at these ports only: a function calls another through a
	// gateway. `surge gateway` listens on 8080 by default.
	GatewayPorts []uint16
	// Resync is how often the rules are written whole though nothing
	// changed, putting back what another program removed (a firewall
	// reload). Each costs an iptables-save and an iptables-restore per
	// address family; shorter repairs sooner.
	Resync time.Duration
}

// DefaultPolicyConfig returns the defaults: the gateway's default port,
// and a rewrite every minute.
func DefaultPolicyConfig() PolicyConfig {
	return PolicyConfig{GatewayPorts: []uint16{8080}, Resync: time.Minute}
}

// withDefaults fills, on a copy, the fields left zero.
func (c PolicyConfig) withDefaults() PolicyConfig {
	d := DefaultPolicyConfig()
	if c.GatewayPorts == nil {
		c.GatewayPorts = d.GatewayPorts
	}
	c.GatewayPorts = slices.Clone(c.GatewayPorts)
	if c.Resync == 0 {
		c.Resync = d.Resync
	}
	return c
}

// Validate reports every bad field.
func (c PolicyConfig) Validate() error {
	var errs []error
	for _, p := range c.GatewayPorts {
		if p == 0 {
			errs = append(errs, fmt.Errorf("gateway ports %v: want ports 1 to 65535", c.GatewayPorts))
			break
		}
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("policy resync %s: must be positive", c.Resync))
	}
	return errors.Join(errs...)
}

// firewall is what the policy needs of network.Firewall. Its methods run
// iptables and block; they are called from the policy's goroutine, and
// from Run's once that has ended.
type firewall interface {
	Apply(ctx context.Context, p network.Policy) error
	Remove(ctx context.Context) error
}

var _ firewall = (*network.Firewall)(nil)

// replicaNetwork is what the policy needs of the runtime's network: its
// mode, and the replicas still attached to it. Its methods read the
// network's state dir; they are called from Run's goroutine.
type replicaNetwork interface {
	Mode() network.Mode
	Attachments() ([]network.Attachment, error)
}

var _ replicaNetwork = (*network.Network)(nil)

// replicaPolicy keeps the node's replica policy in step with the
// cluster: from a list and a watch of the nodes (pod subnets, addresses)
// and of every replica (addresses, functions), both from the API, whose
// node token may read them. Not from gossip: any holder of the join token
// can gossip, and could open a path between two functions. The same watch
// of the nodes tells Peers which gossip claims of routes to believe.
type replicaPolicy struct {
	cfg          PolicyConfig
	api          *client.Client
	self         string
	bridge       string
	controlPlane string // the API's host
	log          *slog.Logger
	clock        clock.Clock
	// nameservers returns the name servers replicas are given.
	nameservers func() []netip.Addr
	newFirewall func(bridge string) (firewall, error)
	// peers, when set, learns from the same watch what the control plane
	// assigned each node, to route only matching gossip claims.
	peers *Peers

	// Set by start.
	fw          firewall
	attachments func() ([]network.Attachment, error)
	cancel      context.CancelFunc
	done        chan struct{}

	mu       sync.Mutex
	base     network.PolicyInput // this node's part of the input
	nodes    map[string]*api.Node
	replicas map[api.Key]*api.Replica
	changed  chan struct{} // one pending signal: the state changed
}

// newReplicaPolicy returns the policy of the agent o describes, which
// start starts once the runtime's network exists.
func newReplicaPolicy(o Options, c *client.Client, peers *Peers) *replicaPolicy {
	bridge := o.Containers.Network.BridgeName
	if bridge == "" {
		bridge = network.DefaultConfig().BridgeName
	}
	host := ""
	if u, err := url.Parse(o.Client.Server); err == nil {
		host = u.Hostname()
	}
	log := o.Log.With("component", "policy")
	return &replicaPolicy{
		cfg: o.Policy, api: c, self: o.Agent.NodeName, bridge: bridge, controlPlane: host,
		log: log, clock: o.Clock, nameservers: hostNameservers,
		newFirewall: func(bridge string) (firewall, error) { return network.NewFirewall(bridge, log) },
		nodes:       map[string]*api.Node{}, replicas: map[api.Key]*api.Replica{},
		changed: make(chan struct{}, 1), peers: peers,
	}
}

// start puts the policy in place for node's replicas on n before any
// replica of this agent starts, and keeps it in step until stop. With
// host networking there is nothing to put it on: it says so and returns.
// The first rules come from a list of the nodes and replicas; an error
// there, or in applying them, is start's.
func (p *replicaPolicy) start(ctx context.Context, node *api.Node, n replicaNetwork) error {
	if n.Mode() != network.ModeCNI {
		p.log.Warn("no replica network policy: replicas share the host's network and reach all it reaches")
		return nil
	}
	subnet, err := netip.ParsePrefix(node.Spec.PodSubnet)
	if err != nil {
		return fmt.Errorf("replica policy: pod subnet %q of node %s: %w", node.Spec.PodSubnet, p.self, err)
	}
	fw, err := p.newFirewall(p.bridge)
	if err != nil {
		return err
	}
	p.base = network.PolicyInput{
		Bridge: p.bridge, Subnet: subnet, GatewayPorts: p.cfg.GatewayPorts,
		ControlPlane: resolveHost(ctx, p.controlPlane, p.log),
	}
	nodes, err := client.List[api.Node](ctx, p.api, "", nil)
	if err != nil {
		return fmt.Errorf("replica policy: list nodes: %w", err)
	}
	reps, err := client.List[api.Replica](ctx, p.api, "", nil)
	if err != nil {
		return fmt.Errorf("replica policy: list replicas: %w", err)
	}
	p.resetNodes(nodes.Items)
	p.resetReplicas(reps.Items)
	first := network.BuildPolicy(p.input())
	p.fw, p.attachments = fw, n.Attachments
	if err := fw.Apply(ctx, first); err != nil {
		// An apply cut short (the agent stopped while iptables-restore
		// ran) may have committed its chains: take them out again.
		p.removeUnused()
		p.fw = nil
		return err
	}
	p.log.Info("replica network policy in place", "bridge", p.bridge, "chains", network.ChainPrefix(p.bridge)+"*")

	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			mirror(ctx, p, "nodes", nodes.ResourceVersion, p.resetNodes, p.updateNode)
			return nil
		})
		g.Go(func() error {
			mirror(ctx, p, "replicas", reps.ResourceVersion, p.resetReplicas, p.updateReplica)
			return nil
		})
		g.Go(func() error { p.keep(ctx, first); return nil })
		_ = g.Wait()
	}()
	return nil
}

// stop ends the watches, then removes the policy if no replica is left on
// the node's network. Replicas the agent leaves running, for the next
// agent to adopt, stay fenced in: the chains stay until that agent
// replaces them. It is a no-op when start did not put a policy in place.
func (p *replicaPolicy) stop() {
	if p.fw == nil {
		return
	}
	p.cancel()
	<-p.done
	p.removeUnused()
}

// removeUnused removes the policy if no replica is left on the node's
// network to fence in.
func (p *replicaPolicy) removeUnused() {
	left, err := p.attachments()
	if err != nil {
		p.log.Warn("replica policy: cannot tell whether replicas are left; leaving the policy in place", "err", err)
		return
	}
	if len(left) > 0 {
		p.log.Info("replica network policy left in place for the replicas that keep running", "replicas", len(left))
		return
	}
	// Real I/O after the agent's context has ended: bounded by real time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.fw.Remove(ctx); err != nil {
		p.log.Warn("remove the replica network policy", "err", err)
		return
	}
	p.log.Info("replica network policy removed", "bridge", p.bridge)
}

// keep applies the policy whenever the state changes, and whole every
// Resync, until ctx ends; applied is what start applied. A failed apply
// is retried with back-off, the rules before it staying in place.
func (p *replicaPolicy) keep(ctx context.Context, applied network.Policy) {
	t := p.clock.NewTicker(p.cfg.Resync)
	defer t.Stop()
	retry := backoff.Policy{Base: 200 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}
	failures := 0
	for {
		var again <-chan time.Time
		var timer clock.Timer
		if failures > 0 {
			timer = p.clock.NewTimer(retry.Delay(failures))
			again = timer.Chan()
		}
		force := false
		select {
		case <-ctx.Done():
		case <-p.changed:
		case <-t.Chan():
			force = true
		case <-again:
			force = true
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		want := network.BuildPolicy(p.input())
		if !force && failures == 0 && reflect.DeepEqual(want, applied) {
			continue
		}
		if err := p.fw.Apply(ctx, want); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			p.log.Warn("apply the replica network policy; retrying", "err", err, "failures", failures)
			continue
		}
		applied, failures = want, 0
	}
}

// input is the policy's input from the state the watches keep.
func (p *replicaPolicy) input() network.PolicyInput {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := policyInput(p.base, p.self, p.nodes, p.replicas)
	in.Nameservers = p.nameservers()
	return in
}

// policyInput completes base (this node's bridge, subnet, ports, control
// plane) from what the control plane says: every node's pod subnet, the
// other nodes' addresses, and every replica's address and function. A
// replica's address counts only inside the pod subnet of the node it is
// bound to, and not once it has failed: a replica status, which any
// agent may write, cannot claim an address on another node.
func policyInput(base network.PolicyInput, self string, nodes map[string]*api.Node, replicas map[api.Key]*api.Replica) network.PolicyInput {
	in := base
	subnets := map[string]netip.Prefix{}
	for name, n := range nodes {
		if s, err := netip.ParsePrefix(n.Spec.PodSubnet); err == nil {
			subnets[name] = s.Masked()
			in.PodSubnets = append(in.PodSubnets, s.Masked())
		}
		if name == self {
			continue
		}
		if a, err := netip.ParseAddr(n.Status.Address); err == nil && !a.IsLoopback() && !a.IsUnspecified() {
			in.Peers = append(in.Peers, a)
		}
	}
	for _, r := range replicas {
		ip, err := netip.ParseAddr(r.Status.IP)
		s, ok := subnets[r.Spec.NodeName]
		if err != nil || !ok || !s.Contains(ip) || r.Status.Phase == api.ReplicaFailed || r.Spec.Function == "" {
			continue
		}
		ns := r.Metadata.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
		in.Replicas = append(in.Replicas, network.ReplicaAddr{IP: ip, Function: ns + "/" + r.Spec.Function})
	}
	return in
}

func (p *replicaPolicy) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *replicaPolicy) resetNodes(items []api.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, n := range p.nodes {
		if !slices.ContainsFunc(items, func(m api.Node) bool { return m.Metadata.Name == name }) {
			p.assign(n, true)
		}
	}
	clear(p.nodes)
	for i := range items {
		p.nodes[items[i].Metadata.Name] = &items[i]
		p.assign(&items[i], false)
	}
	p.signal()
}

func (p *replicaPolicy) updateNode(e api.WatchEvent[*api.Node]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Type == api.EventDeleted {
		delete(p.nodes, e.Object.Metadata.Name)
	} else {
		p.nodes[e.Object.Metadata.Name] = e.Object
	}
	p.assign(e.Object, e.Type == api.EventDeleted)
	p.signal()
}

// assign tells peers what the control plane gave node n: its pod subnet
// and registered address (nothing once it is gone).
func (p *replicaPolicy) assign(n *api.Node, gone bool) {
	if p.peers == nil {
		return
	}
	subnet, err1 := netip.ParsePrefix(n.Spec.PodSubnet)
	via, err2 := netip.ParseAddr(n.Status.Address)
	p.peers.SetAssigned(n.Metadata.Name, subnet, via, !gone && err1 == nil && err2 == nil)
}

func (p *replicaPolicy) resetReplicas(items []api.Replica) {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.replicas)
	for i := range items {
		p.replicas[api.KeyOf(&items[i])] = &items[i]
	}
	p.signal()
}

func (p *replicaPolicy) updateReplica(e api.WatchEvent[*api.Replica]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Type == api.EventDeleted {
		delete(p.replicas, api.KeyOf(e.Object))
	} else {
		p.replicas[api.KeyOf(e.Object)] = e.Object
	}
	p.signal()
}

// mirror keeps a copy of the objects of type T in every namespace
// current: a watch from version rv, and a new list (handed to reset)
// whenever the watch cannot go on — the history compacted, or an error,
// after a back-off. It returns when ctx ends.
func mirror[T any, P api.ObjectPtr[T]](ctx context.Context, p *replicaPolicy, what, rv string,
	reset func([]T), update func(api.WatchEvent[*T])) {
	retry := backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}
	for {
		err := client.Watch[T, P](ctx, p.api, "", client.WatchOptions{ResourceVersion: rv},
			func(e api.WatchEvent[*T]) error { update(e); return nil })
		if ctx.Err() != nil {
			return
		}
		for failures := 0; ; failures++ {
			if !errors.Is(err, api.ErrGone) {
				p.log.Warn("replica policy: watch "+what+"; listing again", "err", err)
				if !clock.Sleep(ctx, p.clock, retry.Delay(failures+1)) {
					return
				}
			}
			list, lerr := client.List[T, P](ctx, p.api, "", nil)
			if lerr == nil {
				reset(list.Items)
				rv = list.ResourceVersion
				break
			}
			if ctx.Err() != nil {
				return
			}
			err = lerr
		}
	}
}

// resolveHost returns the IPv4 addresses of host (an address or a name),
// leaving out loopback, which replicas cannot reach anyway.
func resolveHost(ctx context.Context, host string, log *slog.Logger) []netip.Addr {
	if host == "" {
		return nil
	}
	var as []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		as = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if as, err = net.DefaultResolver.LookupNetIP(rctx, "ip4", host); err != nil {
			log.Warn("replica policy: cannot resolve the API's host; replicas are not kept from it", "host", host, "err", err)
		}
	}
	var out []netip.Addr
	for _, a := range as {
		if a = a.Unmap(); a.Is4() && !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// hostNameservers returns the name servers of the host's resolv.conf
// that replicas are given: all but loopback ones, which mean nothing in a
// replica's own network namespace.
func hostNameservers() []netip.Addr {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	return nameservers(b)
}

func nameservers(resolvConf []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}
