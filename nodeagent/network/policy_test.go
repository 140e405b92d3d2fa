package network

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func rep(ip, fn string) ReplicaAddr { return ReplicaAddr{IP: netip.MustParseAddr(ip), Function: fn} }

// node1 is a node of a three-node cluster: replicas of default/hello and
// default/probe here, more of hello and of other functions elsewhere.
func node1() PolicyInput {
	return PolicyInput{
		Bridge:       "surge0",
		Subnet:       netip.MustParsePrefix("10.244.1.0/24"),
		PodSubnets:   prefixes("10.244.2.0/24", "10.244.1.0/24", "10.244.3.0/24"),
		Peers:        addrs("10.0.0.3", "10.0.0.2"),
		ControlPlane: addrs("10.0.0.1"),
		GatewayPorts: []uint16{8080},
		Nameservers:  addrs("169.254.169.254"),
		Replicas: []ReplicaAddr{
			rep("10.244.1.5", "default/hello"),
			rep("10.244.2.7", "default/hello"),
			rep("10.244.1.6", "default/probe"),
			rep("10.244.3.9", "team/hello"), // same name, another namespace
			rep("10.244.1.2", "default/hello"),
		},
	}
}

func TestBuildPolicy(t *testing.T) {
	got := BuildPolicy(node1())
	dns := []string{
		"-d 169.254.169.254/32 -p udp -m udp --dport 53 -j RETURN",
		"-d 169.254.169.254/32 -p tcp -m tcp --dport 53 -j RETURN",
	}
	want := Policy{
		Chains: []Chain{
			{Name: "SURGE-surge0-HOST", Rules: slices.Concat([]string{replies}, dns, []string{
				"-d 169.254.0.0/16 " + reject,
				"-p tcp -m tcp --dport 8080 -j RETURN",
				reject,
			})},
			{Name: "SURGE-surge0-OUT", Rules: slices.Concat([]string{replies}, dns, []string{
				"-d 169.254.0.0/16 " + reject,
				"-d 224.0.0.0/4 " + reject,
				"-d 255.255.255.255/32 " + reject,
				"-d 10.0.0.1/32 -p tcp -m tcp --dport 8080 -j RETURN",
				"-d 10.0.0.1/32 " + reject,
				"-d 10.0.0.2/32 -p tcp -m tcp --dport 8080 -j RETURN",
				"-d 10.0.0.2/32 " + reject,
				"-d 10.0.0.3/32 -p tcp -m tcp --dport 8080 -j RETURN",
				"-d 10.0.0.3/32 " + reject,
				"-s 10.244.1.2/32 -g SURGE-surge0-F1",
				"-s 10.244.1.5/32 -g SURGE-surge0-F1",
				"-s 10.244.1.6/32 -g SURGE-surge0-F2",
				"-j SURGE-surge0-PODS",
			})},
			{Name: "SURGE-surge0-IN", Rules: []string{
				replies,
				"-s 10.0.0.2/32 -j RETURN",
				"-s 10.0.0.3/32 -j RETURN",
				"-j DROP",
			}},
			{Name: "SURGE-surge0-PODS", Rules: []string{
				"-d 10.244.1.0/24 " + reject,
				"-d 10.244.2.0/24 " + reject,
				"-d 10.244.3.0/24 " + reject,
			}},
			{Name: "SURGE-surge0-F1", Rules: []string{
				`-d 10.244.1.2/32 -m comment --comment "default/hello" -j RETURN`,
				`-d 10.244.1.5/32 -m comment --comment "default/hello" -j RETURN`,
				`-d 10.244.2.7/32 -m comment --comment "default/hello" -j RETURN`,
				"-j SURGE-surge0-PODS",
			}},
			{Name: "SURGE-surge0-F2", Rules: []string{
				`-d 10.244.1.6/32 -m comment --comment "default/probe" -j RETURN`,
				"-j SURGE-surge0-PODS",
			}},
		},
		Jumps: []Jump{
			{From: "INPUT", Rule: "-i surge0 -j SURGE-surge0-HOST"},
			{From: "FORWARD", Rule: "-i surge0 -j SURGE-surge0-OUT"},
			{From: "FORWARD", Rule: "! -i surge0 -o surge0 -j SURGE-surge0-IN"},
		},
		Chains6: []Chain{{Name: "SURGE-surge0-V6", Rules: []string{"-i surge0 " + reject6, "-j DROP"}}},
		Jumps6: []Jump{
			{From: "INPUT", Rule: "-i surge0 -j SURGE-surge0-V6"},
			{From: "FORWARD", Rule: "-i surge0 -j SURGE-surge0-V6"},
			{From: "FORWARD", Rule: "-o surge0 -j SURGE-surge0-V6"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BuildPolicy (-want +got):\n%s", diff)
	}
}

// TestBuildPolicyIgnoresOrder: the same state listed in another order
// gives the same rules, so that the agent rewrites them only on a change.
func TestBuildPolicyIgnoresOrder(t *testing.T) {
	in := node1()
	want := BuildPolicy(in)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		s := node1()
		r.Shuffle(len(s.Replicas), func(i, j int) { s.Replicas[i], s.Replicas[j] = s.Replicas[j], s.Replicas[i] })
		r.Shuffle(len(s.PodSubnets), func(i, j int) { s.PodSubnets[i], s.PodSubnets[j] = s.PodSubnets[j], s.PodSubnets[i] })
		r.Shuffle(len(s.Peers), func(i, j int) { s.Peers[i], s.Peers[j] = s.Peers[j], s.Peers[i] })
		s.Replicas = append(s.Replicas, s.Replicas[0]) // listed twice
		if diff := cmp.Diff(want, BuildPolicy(s)); diff != "" {
			t.Fatalf("shuffled input (-want +got):\n%s", diff)
		}
	}
}

// rulesOf returns the rules of the named chain (after the prefix), or nil.
func rulesOf(p Policy, bridge, chain string) []string {
	for _, c := range slices.Concat(p.Chains, p.Chains6) {
		if c.Name == ChainPrefix(bridge)+chain {
			return c.Rules
		}
	}
	return nil
}

func TestBuildPolicyCases(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*PolicyInput)
		chain  string
		want   []string // the chain's rules; nil: the chain does not exist
	}{
		{"an address claimed by two functions is neither's",
			func(in *PolicyInput) { in.Replicas = append(in.Replicas, rep("10.244.2.7", "default/probe")) },
			"F1", []string{
				`-d 10.244.1.2/32 -m comment --comment "default/hello" -j RETURN`,
				`-d 10.244.1.5/32 -m comment --comment "default/hello" -j RETURN`,
				"-j SURGE-surge0-PODS",
			}},
		{"a local address claimed by two functions is no source",
			func(in *PolicyInput) {
				in.Replicas = []ReplicaAddr{rep("10.244.1.5", "default/hello"), rep("10.244.1.5", "default/probe")}
			},
			"F1", nil},
		{"no replica here: no function chain, only the pod subnets",
			func(in *PolicyInput) { in.Replicas = []ReplicaAddr{rep("10.244.2.7", "default/hello")} },
			"OUT", []string{replies,
				"-d 169.254.169.254/32 -p udp -m udp --dport 53 -j RETURN",
				"-d 169.254.169.254/32 -p tcp -m tcp --dport 53 -j RETURN",
				"-d 169.254.0.0/16 " + reject, "-d 224.0.0.0/4 " + reject, "-d 255.255.255.255/32 " + reject,
				"-d 10.0.0.1/32 -p tcp -m tcp --dport 8080 -j RETURN", "-d 10.0.0.1/32 " + reject,
				"-d 10.0.0.2/32 -p tcp -m tcp --dport 8080 -j RETURN", "-d 10.0.0.2/32 " + reject,
				"-d 10.0.0.3/32 -p tcp -m tcp --dport 8080 -j RETURN", "-d 10.0.0.3/32 " + reject,
				"-j SURGE-surge0-PODS"}},
		{"the node's own subnet is a pod subnet even when unlisted",
			func(in *PolicyInput) { in.PodSubnets = nil },
			"PODS", []string{"-d 10.244.1.0/24 " + reject}},
		{"no gateway port: the node reached only for DNS",
			func(in *PolicyInput) { in.GatewayPorts, in.Nameservers = nil, nil },
			"HOST", []string{replies, "-d 169.254.0.0/16 " + reject, reject}},
		{"two gateway ports, listed twice",
			func(in *PolicyInput) { in.GatewayPorts, in.Nameservers = []uint16{8443, 8080, 8443}, nil },
			"HOST", []string{replies, "-d 169.254.0.0/16 " + reject,
				"-p tcp -m tcp --dport 8080 -j RETURN", "-p tcp -m tcp --dport 8443 -j RETURN", reject}},
		{"IPv6 and unspecified addresses are left out",
			func(in *PolicyInput) {
				in.Peers = addrs("fd00::1", "0.0.0.0", "::ffff:10.0.0.2")
				in.Replicas = append(in.Replicas, rep("fd00::5", "default/hello"))
			},
			"IN", []string{replies, "-s 10.0.0.2/32 -j RETURN", "-j DROP"}},
		{"no peers: nothing from beyond the bridge opens a connection",
			func(in *PolicyInput) { in.Peers = nil },
			"IN", []string{replies, "-j DROP"}},
		{"another bridge, other names",
			func(in *PolicyInput) { in.Bridge = "surge-e2e0" },
			"V6", nil}, // under surge0's names: none
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := node1()
			tt.mutate(&in)
			got := rulesOf(BuildPolicy(in), "surge0", tt.chain)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("chain %s (-want +got):\n%s", tt.chain, diff)
			}
		})
	}
}

func TestOwned(t *testing.T) {
	tests := []struct {
		bridge, chain string
		want          bool
	}{
		{"surge0", "SURGE-surge0-OUT", true},
		{"surge0", "SURGE-surge0-F12", true},
		{"surge0", "SURGE-surge0-V6", true},
		{"surge0", "SURGE-surge0-x-OUT", false}, // bridge surge0-x's
		{"surge0-x", "SURGE-surge0-x-OUT", true},
		{"surge0", "SURGE-surge0-F1-OUT", false},
		{"surge0", "SURGE-surge0-", false},
		{"surge0", "SURGE-surge1-OUT", false},
		{"surge0", "CNI-FORWARD", false},
		{"surge0", "SURGE-surge0-Fx", false},
	}
	for _, tt := range tests {
		if got := Owned(tt.bridge, tt.chain); got != tt.want {
			t.Errorf("Owned(%q, %q) = %v, want %v", tt.bridge, tt.chain, got, tt.want)
		}
	}
}

// saved is a filter table as iptables-save prints it: an older policy of
// surge0 (with a function chain since gone, and its jumps), the policy
// of another bridge whose name starts like it, and rules of others.
const saved = `# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-FORWARD - [0:0]
:SURGE-surge0-F1 - [0:0]
:SURGE-surge0-F2 - [0:0]
:SURGE-surge0-HOST - [0:0]
:SURGE-surge0-OUT - [0:0]
:SURGE-surge0-x-OUT - [0:0]
-A INPUT -i surge0 -j SURGE-surge0-HOST
-A INPUT -i eth0 -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -i surge0 -j SURGE-surge0-OUT
-A FORWARD -i surge0-x -j SURGE-surge0-x-OUT
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A SURGE-surge0-OUT -s 10.244.1.6/32 -g SURGE-surge0-F2
-A SURGE-surge0-F2 -d 10.244.1.6/32 -j RETURN
-A SURGE-surge0-x-OUT -j SURGE-surge0-x-OUT
COMMIT
`

func TestRestoreScript(t *testing.T) {
	chains := []Chain{
		{Name: "SURGE-surge0-HOST", Rules: []string{"-j DROP"}},
		{Name: "SURGE-surge0-OUT", Rules: []string{"-s 10.244.1.5/32 -g SURGE-surge0-F1", "-j RETURN"}},
		{Name: "SURGE-surge0-F1", Rules: []string{"-d 10.244.1.5/32 -j RETURN"}},
	}
	jumps := []Jump{
		{From: "INPUT", Rule: "-i surge0 -j SURGE-surge0-HOST"},
		{From: "FORWARD", Rule: "-i surge0 -j SURGE-surge0-OUT"},
	}
	want := `*filter
:SURGE-surge0-HOST - [0:0]
:SURGE-surge0-OUT - [0:0]
:SURGE-surge0-F1 - [0:0]
:SURGE-surge0-F2 - [0:0]
-D INPUT -i surge0 -j SURGE-surge0-HOST
-D FORWARD -i surge0 -j SURGE-surge0-OUT
-A SURGE-surge0-HOST -j DROP
-A SURGE-surge0-OUT -s 10.244.1.5/32 -g SURGE-surge0-F1
-A SURGE-surge0-OUT -j RETURN
-A SURGE-surge0-F1 -d 10.244.1.5/32 -j RETURN
-I FORWARD 1 -i surge0 -j SURGE-surge0-OUT
-I INPUT 1 -i surge0 -j SURGE-surge0-HOST
-X SURGE-surge0-F2
COMMIT
`
	if diff := cmp.Diff(want, restoreScript("surge0", saved, chains, jumps)); diff != "" {
		t.Errorf("apply (-want +got):\n%s", diff)
	}

	wantRemove := `*filter
:SURGE-surge0-F1 - [0:0]
:SURGE-surge0-F2 - [0:0]
:SURGE-surge0-HOST - [0:0]
:SURGE-surge0-OUT - [0:0]
-D INPUT -i surge0 -j SURGE-surge0-HOST
-D FORWARD -i surge0 -j SURGE-surge0-OUT
-X SURGE-surge0-F1
-X SURGE-surge0-F2
-X SURGE-surge0-HOST
-X SURGE-surge0-OUT
COMMIT
`
	if diff := cmp.Diff(wantRemove, restoreScript("surge0", saved, nil, nil)); diff != "" {
		t.Errorf("remove (-want +got):\n%s", diff)
	}
	if got := restoreScript("surge1", saved, nil, nil); got != "" {
		t.Errorf("remove of a bridge without chains = %q, want nothing to do", got)
	}
	if got := restoreScript("surge0-x", saved, nil, nil); !strings.Contains(got, "-X SURGE-surge0-x-OUT") || strings.Contains(got, "SURGE-surge0-OUT") {
		t.Errorf("remove of surge0-x touches the wrong chains:\n%s", got)
	}
}
