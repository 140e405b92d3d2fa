package nodeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/internal/telemetry/telemetrytest"
	"github.com/surgeplatform/surge/nodeagent/containers"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// testCA is a self-signed CA certificate's PEM, made once.
var testCA = sync.OnceValue(func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: clock.Epoch, NotAfter: clock.Epoch.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
})

// goodOptions are options Validate accepts, for tests to break.
func goodOptions() Options {
	o := DefaultOptions()
	o.Client = client.Config{Server: "https://10.0.0.1:7070", Token: "join-token-0123456789", CertificateAuthority: testCA()}
	o.Agent.NodeName = "node-1"
	o.Containers.StateDir = "/var/lib/surge/agent"
	return o
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Options)
		want   []string // what the error names, one per bad option
	}{
		{"good", func(*Options) {}, nil},
		{"an upper-case host name is lowercased", func(o *Options) { o.Agent.NodeName = "Node-1" }, nil},
		{"no CA trusts the system's roots", func(o *Options) { o.Client.CertificateAuthority = "" }, nil},
		{"no CA to know the API server's client certificate by", func(o *Options) {
			o.Client.CertificateAuthority, o.Agent.LogAddr = "", "10.0.0.5:7073"
		}, []string{`log address "10.0.0.5:7073"`}},
		{"every bad option at once", func(o *Options) {
			o.Client.Server = "10.0.0.1"
			o.Client.Token = ""
			o.Agent.NodeName = "node_1"
			o.Agent.Heartbeat = 0
			o.Agent.ProbeFailureThreshold = 0
			o.Agent.StopGrace = -time.Second
			o.Agent.Address = ""
			o.Agent.LogAddr = "7073"
			o.Containers.StateDir = "var/lib/surge"
			o.Containers.LogMaxSize = 1
			o.GossipAddr = "0.0.0.0"
			o.Join = []string{"10.0.0.2:7946", "10.0.0.3"}
		}, []string{
			`client server "10.0.0.1"`, `client token ""`, `node name "node_1"`, "heartbeat 0s",
			"probe failure threshold 0", "stop grace -1s", `node address ""`, `log address "7073"`,
			`runtime StateDir "var/lib/surge"`, "runtime LogMaxSize 1", `gossip address "0.0.0.0"`,
			`join address "10.0.0.3"`,
		}},
		{"a bad CA is named once", func(o *Options) { o.Client.CertificateAuthority = "not PEM" }, []string{"runtime RegistryCA"}},
		{"an API URL with a path", func(o *Options) { o.Client.Server = "https://10.0.0.1:7070/api" }, []string{"client server"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := goodOptions()
			tt.mutate(&o)
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() does not name %s:\n%s", w, err)
				}
			}
			if len(lines) != len(tt.want) {
				t.Errorf("Validate() reports %d problems, want %d:\n%s", len(lines), len(tt.want), err)
			}
			if strings.Contains(err.Error(), o.Client.Token) && o.Client.Token != "" {
				t.Errorf("Validate() shows the token: %s", err)
			}
		})
	}
}

func TestRegistryHost(t *testing.T) {
	for _, tt := range []struct {
		server, want string
		ok           bool
	}{
		{"https://10.0.0.1:7070", "10.0.0.1:7070", true},
		{"https://api.example.test:7070/", "api.example.test:7070", true},
		{"http://127.0.0.1:7070", "127.0.0.1:7070", true},
		{"https://[fd00::1]:7070", "[fd00::1]:7070", true},
		{"https://api.example.test", "", false},
		{"10.0.0.1:7070", "", false},
		{"https://10.0.0.1:7070/v1", "", false},
		{"", "", false},
	} {
		got, err := registryHost(tt.server)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("registryHost(%q) = %q, %v; want %q, ok %v", tt.server, got, err, tt.want, tt.ok)
		}
	}
}

func TestWithDefaultsHandsTheClockAndLogToEveryPart(t *testing.T) {
	fake := clock.NewFake()
	o := goodOptions()
	o.Agent.NodeName = "Worker-7"
	o.Agent.MilliCPU, o.Agent.MemoryBytes = 0, 0
	o.Clock = fake
	o = o.withDefaults()
	if o.Agent.NodeName != "worker-7" {
		t.Errorf("node name %q, want it lowercased", o.Agent.NodeName)
	}
	if o.Agent.Clock != fake || o.Containers.Clock != fake || o.Containers.Network.Clock != fake {
		t.Errorf("clocks: agent %v, containers %v, network %v; want the options' fake", o.Agent.Clock, o.Containers.Clock, o.Containers.Network.Clock)
	}
	if o.Log == nil || o.Containers.Log == nil || o.Containers.Network.Log == nil {
		t.Error("a part has no logger")
	}
	if o.Agent.MilliCPU <= 0 || o.Agent.MemoryBytes <= 0 {
		t.Errorf("capacity %d millicores, %d bytes: want the machine's less the reserve", o.Agent.MilliCPU, o.Agent.MemoryBytes)
	}
	if (Options{}).withDefaults().Agent.Clock != clock.Real() {
		t.Error("no clock: want the wall clock")
	}
}

func TestContainersConfig(t *testing.T) {
	o := goodOptions()
	o.Containers.Network.BridgeName, o.Containers.Network.NetworkName = "surge1", "surge1"
	o = o.withDefaults()
	node := &api.Node{Spec: api.NodeSpec{PodSubnet: "10.244.3.0/24"}}
	rc := o.containersConfig(node, "10.0.0.1:7070")
	got := struct {
		StateDir, Subnet, Bridge, RegistryHost, RegistryToken, RegistryCA string
		SameClock                                                         bool
	}{rc.StateDir, rc.Network.Subnet, rc.Network.BridgeName, rc.RegistryHost, rc.RegistryToken, string(rc.RegistryCA), rc.Clock == o.Clock}
	want := struct {
		StateDir, Subnet, Bridge, RegistryHost, RegistryToken, RegistryCA string
		SameClock                                                         bool
	}{"/var/lib/surge/agent", "10.244.3.0/24", "surge1", "10.0.0.1:7070", "", testCA(), true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("containers config (-want +got):\n%s", diff)
	}
	// Pulls authenticate with the node's certificate, never the join token.
	cert := &tls.Certificate{}
	o.registryCert = func() *tls.Certificate { return cert }
	if rc := o.containersConfig(node, "10.0.0.1:7070"); rc.RegistryCertificate == nil || rc.RegistryCertificate() != cert || rc.RegistryToken != "" {
		t.Errorf("registry credentials: token %q, a certificate %v; want the node's certificate only", rc.RegistryToken, rc.RegistryCertificate != nil)
	}
	if err := rc.WithDefaults().Validate(); err != nil {
		t.Errorf("derived config does not validate: %v", err)
	}
	if o.Containers.Network.Subnet != "" || o.Containers.RegistryHost != "" {
		t.Error("containersConfig changed the options")
	}
}

func TestGossipConfigAndNodeMeta(t *testing.T) {
	o := goodOptions()
	o.Agent.Address = "10.0.0.5"
	o.Agent.MilliCPU, o.Agent.MemoryBytes = 3900, 8<<30
	o = o.withDefaults()
	key := []byte("surge-nodeagent-test-gossip-key0")
	g := o.gossipOptions(nil, key)
	if g.NodeName != "node-1" || g.Role != gossip.RoleAgent || string(g.Key) != string(key) || g.Meta.Address != netip.MustParseAddr("10.0.0.5") ||
		g.Addr != o.GossipAddr || g.Clock != o.Clock || g.Handler != nil {
		t.Errorf("gossip options: name %q, role %q, addr %q, meta %+v", g.NodeName, g.Role, g.Addr, g.Meta)
	}
	o.Agent.Address = "node-1.example.test"
	if g := o.gossipOptions(nil, nil); g.Meta.Address.IsValid() {
		t.Errorf("a host name as address gave meta address %v, want none", g.Meta.Address)
	}

	node := &api.Node{Spec: api.NodeSpec{PodSubnet: "10.244.3.0/24"}}
	for _, tt := range []struct {
		name   string
		node   *api.Node
		mode   network.Mode
		subnet string
	}{
		{"cni routes to the subnet", node, network.ModeCNI, "10.244.3.0/24"},
		{"host networking has no subnet to route to", node, network.ModeHost, "invalid Prefix"},
		{"no subnet given", &api.Node{}, network.ModeCNI, "invalid Prefix"},
	} {
		m := nodeMeta(g.Meta, o.Agent, tt.node, tt.mode)
		if m.PodCIDR.String() != tt.subnet || m.CPUMillis != 3900 || m.MemoryBytes != 8<<30 || m.Address != g.Meta.Address {
			t.Errorf("%s: meta %+v, want subnet %s and the agent's capacity", tt.name, m, tt.subnet)
		}
	}
}

func TestRegisterMetrics(t *testing.T) {
	a, err := New(goodOptions().Agent, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sup := func(name string, phase api.ReplicaPhase) *supervisor {
		s := &supervisor{replica: &api.Replica{Metadata: api.ObjectMeta{Namespace: "default", Name: name},
			Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001"}}}
		s.phase.Store(phase)
		return s
	}
	a.supervisors[api.Key{Namespace: "default", Name: "a"}] = sup("hello-00001-aaaaa", api.ReplicaReady)
	a.supervisors[api.Key{Namespace: "default", Name: "b"}] = sup("hello-00001-bbbbb", api.ReplicaStarting)
	a.supervisors[api.Key{Namespace: "default", Name: "c"}] = sup("hello-00001-ccccc", "")
	a.runtime = usageRuntime{"hello-00001-aaaaa": {CPUSeconds: 1.5, MemoryBytes: 4 << 20}}
	a.metrics.started(time.Second, 20*time.Millisecond, 30*time.Millisecond, 40*time.Millisecond)
	a.metrics.restarts.Inc()
	if unregister, err := registerMetrics(nil, a); err != nil {
		t.Fatalf("no registerer: %v", err)
	} else {
		unregister()
	}
	reg := prometheus.NewRegistry()
	unregister, err := registerMetrics(reg, a)
	if err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP surge_nodeagent_replicas Replicas bound to this node that the agent supervises, by phase.
# TYPE surge_nodeagent_replicas gauge
surge_nodeagent_replicas{phase="Failed"} 0
surge_nodeagent_replicas{phase="Pending"} 1
surge_nodeagent_replicas{phase="Ready"} 1
surge_nodeagent_replicas{phase="Starting"} 1
surge_nodeagent_replicas{phase="Terminating"} 0
# HELP surge_nodeagent_replica_cpu_seconds_total CPU time a running replica's processes used, from its cgroup.
# TYPE surge_nodeagent_replica_cpu_seconds_total counter
surge_nodeagent_replica_cpu_seconds_total{function="hello",namespace="default",replica="hello-00001-aaaaa",revision="hello-00001"} 1.5
# HELP surge_nodeagent_replica_memory_bytes Memory a running replica uses now, page cache included, from its cgroup.
# TYPE surge_nodeagent_replica_memory_bytes gauge
surge_nodeagent_replica_memory_bytes{function="hello",namespace="default",replica="hello-00001-aaaaa",revision="hello-00001"} 4.194304e+06
# HELP surge_nodeagent_replica_restarts_total Replica containers restarted in place after they ended.
# TYPE surge_nodeagent_replica_restarts_total counter
surge_nodeagent_replica_restarts_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "surge_nodeagent_replicas", "surge_nodeagent_replica_cpu_seconds_total",
		"surge_nodeagent_replica_memory_bytes", "surge_nodeagent_replica_restarts_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(a.metrics.starts); n != 5 {
		t.Errorf("%d start stages, want pull, create, start, ready and total", n)
	}
	telemetrytest.Check(t, "the agent's registry", reg, "surge_nodeagent_replica_start_duration_seconds", "surge_nodeagent_replica_start_failures_total")
	var already prometheus.AlreadyRegisteredError
	if _, err := registerMetrics(reg, a); !errors.As(err, &already) {
		t.Errorf("a second agent on the same registry: %v, want AlreadyRegisteredError", err)
	}
	unregister()
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("after unregister: %d metrics, %v", n, err)
	}
}

// usageRuntime is a Runtime that reads replicas' usage from a map; its
// other methods are never called.
type usageRuntime map[string]containers.Usage

func (u usageRuntime) Usage(id string) (containers.Usage, error) {
	if v, ok := u[id]; ok {
		return v, nil
	}
	return containers.Usage{}, errors.New("no cgroup")
}

func (usageRuntime) EnsureImage(context.Context, string) error { panic("unused") }
func (usageRuntime) Start(context.Context, containers.Spec) (containers.Container, error) {
	panic("unused")
}
func (usageRuntime) Wait(context.Context, string) (<-chan containers.Exit, error) { panic("unused") }
func (usageRuntime) Restart(context.Context, string) (containers.Container, error) {
	panic("unused")
}
func (usageRuntime) Stop(context.Context, string, time.Duration) error    { panic("unused") }
func (usageRuntime) List(context.Context) ([]containers.Container, error) { panic("unused") }
func (usageRuntime) RemoveOrphans(context.Context, func(string) bool) ([]string, error) {
	panic("unused")
}

// TestRunWiresItsParts runs the entry point against a real control plane
// with no containerd to find: Run joins gossip, registers the node with
// the client it built, then fails to make the runtime, and says so, with
// everything it started stopped.
func TestRunWiresItsParts(t *testing.T) {
	in := controlplanetest.Start(t)
	o := DefaultOptions()
	o.Client = *in.AdminConfig()
	o.Client.Token = in.Server().JoinToken()
	o.Agent.NodeName = "Wired-1"
	o.Agent.LogAddr = ""
	o.Containers.StateDir = t.TempDir()
	o.Containers.ContainerdAddress = filepath.Join(o.Containers.StateDir, "none.sock")
	o.Containers.PrivateContainerd = false
	// Replicas' networking is TestRunClaimsTheNetworkFirst's.
	o.Containers.Network.Mode = network.ModeHost
	o.GossipAddr = "127.0.0.1:0"
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Metrics = prometheus.NewRegistry()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "no containerd answers at "+o.Containers.ContainerdAddress) {
		t.Fatalf("Run() = %v, want it to say no containerd answers", err)
	}
	c := in.Client()
	defer closeIdleConnections(c)
	n, err := client.Get[api.Node](ctx, c, api.Key{Name: "wired-1"})
	if err != nil {
		t.Fatalf("the node was not registered: %v", err)
	}
	if n.Status.State != api.NodeAlive || n.Status.Address != o.Agent.Address {
		t.Errorf("node status %+v", n.Status)
	}
	if n, _ := testutil.GatherAndCount(o.Metrics.(*prometheus.Registry)); n != 0 {
		t.Errorf("%d metrics left registered after Run returned", n)
	}

	bad := o
	bad.Client.Token, bad.GossipAddr = "", "nowhere"
	if err := Run(ctx, bad); err == nil || !strings.Contains(err.Error(), "client token") || !strings.Contains(err.Error(), "gossip address") {
		t.Errorf("Run(bad options) = %v, want every bad option named", err)
	}
}

// TestRunClaimsTheNetworkFirst: an agent whose replicas could not be
// networked as asked (the CNI plugins missing, the bridge another agent's)
// fails before it joins gossip or registers its node, with the error that
// says which.
func TestRunClaimsTheNetworkFirst(t *testing.T) {
	in := controlplanetest.Start(t)
	o := DefaultOptions()
	o.Client = *in.AdminConfig()
	o.Client.Token = in.Server().JoinToken()
	o.Agent.LogAddr = ""
	o.Containers.StateDir = t.TempDir()
	o.Containers.Network.BridgeName = "surgetw0"
	o.Containers.Network.LockDir = t.TempDir()
	o.GossipAddr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := in.Client()
	defer closeIdleConnections(c)

	noPlugins := o
	noPlugins.Agent.NodeName = "no-plugins"
	noPlugins.Containers.Network.PluginDirs = []string{t.TempDir()}
	var mp *network.MissingPluginsError
	if err := Run(ctx, noPlugins); !errors.As(err, &mp) {
		t.Errorf("Run without the CNI plugins = %v, want a *network.MissingPluginsError", err)
	}
	if _, err := client.Get[api.Node](ctx, c, api.Key{Name: "no-plugins"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("node registered by an agent that could not run: %v", err)
	}

	first := o
	first.Agent.NodeName = "first"
	claim, err := ClaimNetwork(first)
	if err != nil {
		t.Fatal(err)
	}
	defer claim.Release()
	second := o
	second.Agent.NodeName = "second"
	second.Containers.StateDir = t.TempDir()
	var owned *network.OwnedError
	if err := Run(ctx, second); !errors.As(err, &owned) || owned.Owner.Node != "first" ||
		owned.Owner.StateDir != filepath.Join(o.Containers.StateDir, "network") {
		t.Errorf("Run on a bridge another agent holds = %v, want an *network.OwnedError naming node first and its state dir", err)
	}
	if _, err := client.Get[api.Node](ctx, c, api.Key{Name: "second"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("node registered by an agent refused its bridge: %v", err)
	}
	host := second
	host.Containers.Network.Mode = network.ModeHost
	if claim, err := ClaimNetwork(host); claim != nil || err != nil {
		t.Errorf("ClaimNetwork in host mode = %v, %v; want nothing to claim", claim, err)
	}
}
