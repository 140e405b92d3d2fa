package network

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
)

// The replica policy: what a replica on this node may reach, as iptables
// chains in the filter table. BuildPolicy is the pure core (node state in,
// chains out); Firewall applies them.
//
// A replica
//   - answers the gateway: the node's own host (the local gateway, the
//     agent's probes) and peer nodes' addresses (their gateways) reach it;
//     nothing else opens a connection to it;
//   - reaches the world outside the cluster (masqueraded by CNI, as
//     before);
//   - reaches the replicas of its own function, on this node and on others;
//   - reaches the node's own addresses, peer nodes' and the control plane's
//     only at the gateway's ports (a function calls another through a
//     gateway), and the node's name servers only at port 53;
//   - reaches no link-local address (169.254.0.0/16: cloud metadata), no
//     multicast or broadcast, no other function's replica, and nothing over
//     IPv6.
//
// The chains only take away: traffic they let through goes on to the rest
// of the host's INPUT and FORWARD chains (RETURN, never ACCEPT), so an
// operator's own rules still apply to it.
//
// Enforcement is at the source: traffic between replicas of two nodes is
// masqueraded to the sending node's address (CNI's ipMasq), so the node of
// the destination cannot tell one function from another; it admits peer
// nodes, and each node keeps its own replicas to their function.
// Replicas on one bridge talk at layer 2: their traffic reaches the
// FORWARD chain only through br_netfilter, which Firewall requires.

// ReplicaAddr is one replica's address and the function it belongs to.
type ReplicaAddr struct {
	IP netip.Addr
	// Function names the function, "namespace/name".
	Function string
}

// PolicyInput is everything a node's replica policy is made from.
type PolicyInput struct {
	// Bridge is the bridge the node's replicas are attached to; it names
	// the chains.
	Bridge string
	// Subnet is this node's pod subnet: the replicas here have addresses
	// in it.
	Subnet netip.Prefix
	// PodSubnets are the pod subnets of every node of the cluster; Subnet
	// counts whether listed or not. A replica reaches an address in them
	// only if it is a replica of its own function.
	PodSubnets []netip.Prefix
	// Peers are the other nodes' addresses: their gateways reach this
	// node's replicas, and this node's replicas reach them only at
	// GatewayPorts (and Nameservers at port 53).
	Peers []netip.Addr
	// ControlPlane are the API servers' addresses, which replicas reach
	// only at GatewayPorts (a server's host may run a gateway).
	ControlPlane []netip.Addr
	// GatewayPorts are the TCP ports of the gateways, which replicas reach
	// on this node, on Peers and on ControlPlane.
	GatewayPorts []uint16
	// Nameservers are the name servers replicas are given (the node's
	// resolv.conf): they reach port 53 there, wherever it is, even on a
	// link-local address (some clouds' resolver is their metadata
	// server).
	Nameservers []netip.Addr
	// Replicas are the cluster's replicas with an address. An address
	// listed for two functions is no replica's: a stale record must not
	// open a path between them.
	Replicas []ReplicaAddr
}

// Policy is a node's replica policy as iptables rules, for Firewall to
// apply: chains of its own in the filter table, and the jumps into them
// from the built-in chains.
type Policy struct {
	// Chains and Jumps are the IPv4 rules, Chains6 and Jumps6 the IPv6
	// ones.
	Chains, Chains6 []Chain
	Jumps, Jumps6   []Jump
}

// Chain is one chain of the policy and its rules, in order, each in
// iptables-save's syntax without the leading "-A CHAIN".
type Chain struct {
	Name  string
	Rules []string
}

// Jump is a rule of a built-in chain (INPUT, FORWARD) that sends traffic
// into one of the policy's chains.
type Jump struct {
	// From is the built-in chain.
	From string
	// Rule is the rule without "-A From", ending in "-j CHAIN".
	Rule string
}

// Link-local (cloud metadata services at 169.254.169.254 and their
// neighbours), multicast and the limited broadcast: replicas reach none.
var (
	linkLocal = netip.MustParsePrefix("169.254.0.0/16")
	multicast = netip.MustParsePrefix("224.0.0.0/4")
	broadcast = netip.MustParsePrefix("255.255.255.255/32")
)

// Verdicts. A replica that tries what the policy forbids is told at once
// (an ICMP "administratively prohibited", which a dial reports as "no
// route to host") instead of waiting for a timeout; what comes from
// outside unasked is dropped without an answer.
const (
	reject  = "-j REJECT --reject-with icmp-admin-prohibited"
	reject6 = "-j REJECT --reject-with icmp6-adm-prohibited"
	pass    = "-j RETURN"
	drop    = "-j DROP"
	replies = "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
)

// ChainPrefix is how every chain of the policy for bridge starts.
func ChainPrefix(bridge string) string { return "SURGE-" + bridge + "-" }

// plainName is what a bridge name must be for its chains' names and the
// rules that match it to need no quoting.
var plainName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

// ownedChain matches the names of the chains BuildPolicy makes, after
// the prefix: a bridge named "surge0-x" has chains that start like those
// of "surge0", and must not be taken for them.
var ownedChain = regexp.MustCompile(`^(HOST|OUT|IN|PODS|V6|F[0-9]+)$`)

// Owned reports whether chain is one BuildPolicy makes for bridge.
func Owned(bridge, chain string) bool {
	prefix := ChainPrefix(bridge)
	return len(chain) > len(prefix) && chain[:len(prefix)] == prefix && ownedChain.MatchString(chain[len(prefix):])
}

// BuildPolicy returns the policy of in. It is a pure function: the same
// input, listed in any order, gives the same rules. in.Bridge must be a
// plain interface name (letters, digits, '_', '.', '-'), which
// NewFirewall checks: it goes into the rules unquoted.
//
// The chains, for bridge B:
//
//	INPUT   -i B          → HOST: replicas to the node's own addresses
//	FORWARD -i B          → OUT:  replicas to anywhere else (and to each
//	                              other on B, through br_netfilter)
//	FORWARD ! -i B -o B   → IN:   anyone else to the replicas
//	OUT -s REPLICA        → Fn:   the addresses of that replica's function
//	OUT, Fn               → PODS: the pod subnets, for what is left
//	ip6tables INPUT, FORWARD -i B and -o B → V6: nothing
func BuildPolicy(in PolicyInput) Policy {
	pre := ChainPrefix(in.Bridge)
	host, out, inbound, pods, v6 := pre+"HOST", pre+"OUT", pre+"IN", pre+"PODS", pre+"V6"
	br := in.Bridge

	nameservers := sortedAddrs(in.Nameservers)
	ports := slices.Sorted(slices.Values(in.GatewayPorts))
	ports = slices.Compact(ports)
	var dns []string
	for _, ns := range nameservers {
		for _, proto := range []string{"udp", "tcp"} {
			dns = append(dns, fmt.Sprintf("-d %s -p %s -m %s --dport 53 %s", hostPrefix(ns), proto, proto, pass))
		}
	}

	// HOST: the node itself, at whichever of its addresses.
	hostRules := []string{replies}
	hostRules = append(hostRules, dns...)
	hostRules = append(hostRules, "-d "+linkLocal.String()+" "+reject)
	for _, p := range ports {
		hostRules = append(hostRules, fmt.Sprintf("-p tcp -m tcp --dport %d %s", p, pass))
	}
	hostRules = append(hostRules, reject)

	// OUT: everything a replica sends that is not for the node itself.
	outRules := []string{replies}
	outRules = append(outRules, dns...)
	for _, p := range []netip.Prefix{linkLocal, multicast, broadcast} {
		outRules = append(outRules, "-d "+p.String()+" "+reject)
	}
	for _, a := range sortedAddrs(slices.Concat(in.Peers, in.ControlPlane)) {
		for _, p := range ports {
			outRules = append(outRules, fmt.Sprintf("-d %s -p tcp -m tcp --dport %d %s", hostPrefix(a), p, pass))
		}
		outRules = append(outRules, "-d "+hostPrefix(a)+" "+reject)
	}

	// Each function with a replica here gets a chain of its replicas'
	// addresses, cluster-wide; the local replicas go to their function's.
	byIP := map[netip.Addr]string{}
	ambiguous := map[netip.Addr]bool{}
	for _, r := range in.Replicas {
		if !r.IP.Is4() || r.Function == "" {
			continue
		}
		if f, ok := byIP[r.IP]; ok && f != r.Function {
			ambiguous[r.IP] = true
		}
		byIP[r.IP] = r.Function
	}
	members := map[string][]netip.Addr{}
	var local []ReplicaAddr
	for ip, f := range byIP {
		if ambiguous[ip] {
			continue
		}
		members[f] = append(members[f], ip)
		if in.Subnet.Contains(ip) {
			local = append(local, ReplicaAddr{IP: ip, Function: f})
		}
	}
	slices.SortFunc(local, func(a, b ReplicaAddr) int {
		return cmp.Or(cmp.Compare(a.Function, b.Function), a.IP.Compare(b.IP))
	})
	var fnChains []Chain
	chainOf := map[string]string{}
	for _, r := range local {
		name, ok := chainOf[r.Function]
		if !ok {
			name = pre + "F" + strconv.Itoa(len(fnChains)+1)
			chainOf[r.Function] = name
			c := Chain{Name: name}
			comment := fmt.Sprintf("-m comment --comment %q", r.Function)
			for _, ip := range sortedAddrs(members[r.Function]) {
				c.Rules = append(c.Rules, fmt.Sprintf("-d %s %s %s", hostPrefix(ip), comment, pass))
			}
			c.Rules = append(c.Rules, "-j "+pods)
			fnChains = append(fnChains, c)
		}
		outRules = append(outRules, fmt.Sprintf("-s %s -g %s", hostPrefix(r.IP), name))
	}
	outRules = append(outRules, "-j "+pods)

	var podRules []string
	for _, p := range sortedPrefixes(append([]netip.Prefix{in.Subnet}, in.PodSubnets...)) {
		podRules = append(podRules, "-d "+p.String()+" "+reject)
	}

	// IN: new connections to the replicas from beyond the bridge.
	inRules := []string{replies}
	for _, a := range sortedAddrs(in.Peers) {
		inRules = append(inRules, "-s "+hostPrefix(a)+" "+pass)
	}
	inRules = append(inRules, drop)

	p := Policy{
		Chains: append([]Chain{
			{Name: host, Rules: hostRules},
			{Name: out, Rules: outRules},
			{Name: inbound, Rules: inRules},
			{Name: pods, Rules: podRules},
		}, fnChains...),
		Jumps: []Jump{
			{From: "INPUT", Rule: "-i " + br + " -j " + host},
			{From: "FORWARD", Rule: "-i " + br + " -j " + out},
			{From: "FORWARD", Rule: "! -i " + br + " -o " + br + " -j " + inbound},
		},
		Chains6: []Chain{{Name: v6, Rules: []string{"-i " + br + " " + reject6, drop}}},
		Jumps6: []Jump{
			{From: "INPUT", Rule: "-i " + br + " -j " + v6},
			{From: "FORWARD", Rule: "-i " + br + " -j " + v6},
			{From: "FORWARD", Rule: "-o " + br + " -j " + v6},
		},
	}
	return p
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// sortedAddrs returns the IPv4 addresses of as, sorted, without
// duplicates or the unspecified address.
func sortedAddrs(as []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// sortedPrefixes returns the valid IPv4 prefixes of ps, masked, sorted,
// without duplicates.
func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is4() && p.Bits() > 0 {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}
