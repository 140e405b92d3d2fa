package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/containers"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// Options are everything a node agent needs to run; Run builds its parts
// from them. Make them with DefaultOptions.
type Options struct {
	// Client is how the agent reaches the API: the server's URL, the
	// cluster CA, and the cluster's join token. The join token is used
	// once, to obtain the node's client certificate (kept under
	// Containers.StateDir/identity and renewed while the agent runs), and
	// keys gossip; the agent authenticates with the certificate alone, to
	// the API and to the control plane's registry (at the API's
	// host:port).
	Client client.Config
	// Agent configures the agent itself. Its NodeName is lowercased (host
	// names often are not; node names may not be).
	Agent Config
	// Containers configures the container runtime. Run fills in what only
	// the node and Client know: the pod subnet the control plane gives the
	// node (Network.Subnet), the registry (RegistryHost, RegistryToken,
	// RegistryCA), and Log and Clock (below).
	Containers containers.Config
	// GossipAddr is where the agent gossips, HOST:PORT, UDP and TCP; port
	// 0 picks one.
	GossipAddr string
	// Policy configures what the replicas may reach (policy.go).
	Policy PolicyConfig
	// Join lists the gossip addresses (HOST:PORT) of members already in
	// the cluster; empty starts alone until one joins this agent.
	Join []string
	// Log receives the logs of the agent and its parts, each with its
	// component; it replaces the Containers' loggers. Nil discards.
	Log *slog.Logger
	// Clock is the one time source of the agent and its container runtime;
	// it replaces their configs' clocks. Nil is the wall clock.
	Clock clock.Clock
	// Metrics is where the agent registers its metrics while it runs; nil
	// registers none.
	Metrics prometheus.Registerer

	// registryCert is the node's client certificate, for pulls from the
	// control plane's registry; set by Run.
	registryCert func() *tls.Certificate
}

// DefaultOptions returns the defaults: every part's DefaultConfig, and
// gossip on every interface at memberlist's usual port. Client and
// Containers.StateDir are left to the caller.
func DefaultOptions() Options {
	return Options{
		Agent:      DefaultConfig(),
		Containers: containers.DefaultConfig(),
		Policy:     DefaultPolicyConfig(),
		GossipAddr: "0.0.0.0:7946",
	}
}

// withDefaults fills, on a copy, what is derived: the lowercased node
// name, the node's capacity, the logger, and the clock, handed to every
// part.
func (o Options) withDefaults() Options {
	o.Agent.NodeName = strings.ToLower(o.Agent.NodeName)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Clock = clock.Or(o.Clock)
	o.Agent.Clock = o.Clock
	o.Agent = o.Agent.withDefaults()
	o.Agent.apiCA = []byte(o.Client.CertificateAuthority)
	o.Containers.Clock, o.Containers.Network.Clock = o.Clock, o.Clock
	o.Containers.Log = o.Log.With("component", "runtime")
	o.Containers.Network.Log = o.Log.With("component", "network")
	o.Join = append([]string(nil), o.Join...)
	o.Policy = o.Policy.withDefaults()
	return o
}

// Validate reports every bad option at once, each with its name and value,
// as Run would find them. The network's own fields are checked when the
// runtime is made (its subnet is only known then).
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	registry, err := registryHost(o.Client.Server)
	if err != nil {
		errs = append(errs, err)
	}
	if o.Client.Token == "" {
		errs = append(errs, errors.New(`client token "": want the cluster's join token`))
	}
	if err := o.Agent.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := netip.ParseAddr(o.Agent.Address); err != nil {
		errs = append(errs, fmt.Errorf("node address %q: want this node's IP address as peers reach it", o.Agent.Address))
	}
	if a := o.Agent.LogAddr; a != "" && !isHostPort(a) {
		errs = append(errs, fmt.Errorf("log address %q: want HOST:PORT", a))
	} else if a != "" && o.Client.CertificateAuthority == "" {
		errs = append(errs, fmt.Errorf("log address %q: the agent serves logs to the API server alone, whose client certificate it checks against the cluster CA: give the CA (--ca-file)", a))
	}
	rc := o.Containers
	if registry != "" {
		rc = o.containersConfig(&api.Node{}, registry)
	}
	if err := rc.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !isHostPort(o.GossipAddr) {
		errs = append(errs, fmt.Errorf("gossip address %q: want HOST:PORT", o.GossipAddr))
	}
	for _, j := range o.Join {
		if !isHostPort(j) {
			errs = append(errs, fmt.Errorf("join address %q: want HOST:PORT", j))
		}
	}
	return errors.Join(errs...)
}

func isHostPort(s string) bool {
	_, _, err := net.SplitHostPort(s)
	return err == nil
}

// registryHost is the control plane's registry as image references name
// it: the API's host:port.
func registryHost(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || !isHostPort(u.Host) || strings.Trim(u.Path, "/") != "" {
		return "", fmt.Errorf("client server %q: want the API's URL with a port, like https://10.0.0.1:7070", server)
	}
	return u.Host, nil
}

// ClaimNetwork checks that the node's replica network can be made as o
// asks, and takes the agent's hold on its bridge (network.ClaimBridge). In
// CNI mode, the default, the plugins must be installed (a
// *network.MissingPluginsError says which are not) and no other agent may
// hold the bridge (a *network.OwnedError names the one that does). It
// returns nil in host mode, and when o carries a claim already
// (Containers.Network.Claim). Run calls it before it joins gossip or
// registers the node; a caller that calls it first (to fail before
// starting anything else) passes the claim in o, and releases it once Run
// has returned.
func ClaimNetwork(o Options) (*network.Claim, error) {
	o = o.withDefaults()
	nc := o.Containers.WithDefaults().Network
	if err := network.CheckPlugins(nc); err != nil {
		return nil, err
	}
	if nc.Mode == network.ModeHost || nc.Claim != nil {
		return nil, nil
	}
	return network.ClaimBridge(nc, o.Agent.NodeName)
}

// Run runs a node agent until ctx ends, then returns nil once everything
// it started has stopped (its containers keep running, for the next agent
// to adopt, unless Agent.StopReplicasOnExit). It validates o (every bad
// option named at once), claims the node's bridge (ClaimNetwork), joins
// gossip, registers the node, makes the container runtime once the control
// plane has given the node its pod subnet, removes what other agents left
// on the bridge (network.Network.RemoveStrays), and supervises the node's
// replicas (see Agent.Run).
func Run(ctx context.Context, o Options) error {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	if o.Containers.Network.Claim == nil {
		claim, err := ClaimNetwork(o)
		if err != nil {
			return err
		}
		defer claim.Release()
		o.Containers.Network.Claim = claim
	}
	registry, _ := registryHost(o.Client.Server) // valid: checked above
	id, err := startIdentity(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: nothing to undo
		}
		return err
	}
	defer id.close()
	rctx, stopRenew := context.WithCancel(ctx)
	var renewing sync.WaitGroup
	renewing.Go(func() { id.cert.run(rctx) })
	defer func() { stopRenew(); renewing.Wait() }()
	c := id.api
	o.registryCert = id.cert.get

	// The gossip key comes with the node's identity: the join token does
	// not give it.
	key, err := client.GossipKey(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("node %s: %w", o.Agent.NodeName, err)
	}
	peers := NewPeers(o.Agent.NodeName, o.Log)
	gopts := o.gossipOptions(peers, key)
	g, err := gossip.Start(gopts)
	if err != nil {
		return fmt.Errorf("join gossip at %s: %w", o.GossipAddr, err)
	}
	defer g.Stop()
	peers.SetGossip(g.Gossip)

	policy := newReplicaPolicy(o, c, peers)
	defer policy.stop()
	agent, err := New(o.Agent, c, o.runtimeFactory(registry, g.Gossip, gopts.Meta, peers, policy), peers, o.Log)
	if err != nil {
		return err
	}
	unregister, err := registerMetrics(o.Metrics, agent)
	if err != nil {
		return err
	}
	defer unregister()
	return agent.Run(ctx)
}

// gossipOptions is the agent's gossip member: named after the node, keyed
// with the cluster's gossip key, telling peers the node's address,
// handled by peers.
func (o Options) gossipOptions(peers *Peers, key []byte) gossip.Options {
	g := gossip.Options{
		Role: gossip.RoleAgent, NodeName: o.Agent.NodeName, Addr: o.GossipAddr, Seeds: o.Join,
		Key: key, Logger: o.Log, Clock: o.Clock,
	}
	if peers != nil {
		g.Handler = peers
	}
	if ip, err := netip.ParseAddr(o.Agent.Address); err == nil {
		g.Meta.Address = ip
	}
	return g
}

// containersConfig is the runtime's config for node: o.Containers with the
// node's pod subnet and the control plane's registry (at registry, and at
// the client's other API servers, with the node's certificate and the
// client's CA; never the join token).
func (o Options) containersConfig(node *api.Node, registry string) containers.Config {
	rc := o.Containers
	rc.RegistryHost = registry
	for _, s := range o.Client.Endpoints()[1:] {
		if h, err := registryHost(s); err == nil {
			rc.RegistryMirrors = append(rc.RegistryMirrors, h)
		}
	}
	rc.RegistryCertificate = o.registryCert
	rc.RegistryCA = []byte(o.Client.CertificateAuthority)
	rc.Network.Subnet = node.Spec.PodSubnet
	return rc
}

// nodeMeta is what gossip tells peers of this node once its runtime runs:
// base (its address) with the node's capacity, and its pod subnet when
// replicas take their addresses from it (CNI), so that peers route there.
func nodeMeta(base gossip.NodeMeta, cfg Config, node *api.Node, mode network.Mode) gossip.NodeMeta {
	m := base
	m.CPUMillis, m.MemoryBytes = cfg.MilliCPU, cfg.MemoryBytes
	if p, err := netip.ParsePrefix(node.Spec.PodSubnet); err == nil && mode == network.ModeCNI {
		m.PodCIDR = p
	}
	return m
}

// runtimeFactory makes the container runtime once the node is registered,
// puts the replica network policy in place before any replica starts,
// routes to peers through its network, and tells gossip the node's
// capacity and subnet.
func (o Options) runtimeFactory(registry string, g *gossip.Gossip, meta gossip.NodeMeta, peers *Peers, policy *replicaPolicy) RuntimeFactory {
	return func(ctx context.Context, node *api.Node) (Runtime, error) {
		r, err := containers.New(ctx, o.containersConfig(node, registry))
		if err != nil {
			return nil, err
		}
		if o.Containers.Network.Claim != nil {
			// Before any replica starts: what another agent left on the
			// bridge would answer at the addresses this one hands out.
			if _, err := r.Network().RemoveStrays(ctx); err != nil {
				r.Close()
				return nil, fmt.Errorf("remove what another agent left on bridge %s: %w", o.Containers.Network.Claim.Bridge(), err)
			}
		}
		if err := policy.start(ctx, node, r.Network()); err != nil {
			r.Close()
			return nil, err
		}
		peers.SetRouter(r.Network())
		m := nodeMeta(meta, o.Agent, node, r.Network().Mode())
		if err := g.UpdateMeta(ctx, m); err != nil {
			o.Log.Warn("gossip metadata", "err", err)
		}
		return r, nil
	}
}

// closeIdleConnections lets c's idle keep-alive connections go, so that
// none outlives Run.
func closeIdleConnections(c *client.Client) {
	if t, ok := c.Transport().(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}
