package gossip_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/gossip"
)

// testKey is the gossip key of the tests' cluster; otherKey another's.
var (
	testKey  = []byte("surge-gossip-test-key-0123456789")
	otherKey = []byte("another-clusters-gossip-key-0123")
)

func TestDefaultConfigWithKeyIsValid(t *testing.T) {
	cfg := gossip.DefaultConfig()
	cfg.NodeName = "node-a"
	cfg.Key = testKey
	cfg.Meta = gossip.NodeMeta{
		Address:     netip.MustParseAddr("192.0.2.10"),
		PodCIDR:     netip.MustParsePrefix("10.244.1.0/24"),
		CPUMillis:   4000,
		MemoryBytes: 8 << 30,
		APIPort:     7071,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateReportsEveryBadField(t *testing.T) {
	cfg := gossip.DefaultConfig()
	cfg.NodeName = "node-a"
	cfg.Role = "worker"
	cfg.BindAddr = "localhost"
	cfg.BindPort = 70000
	cfg.Key = []byte("short")
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.ProbeTimeout = time.Second
	cfg.Meta.Name = "node-b"
	cfg.Meta.PodCIDR = netip.MustParsePrefix("10.244.1.7/24")
	cfg.Meta.CPUMillis = -1
	err := cfg.Validate()
	if !errors.Is(err, gossip.ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{
		`Role "worker"`,
		`BindAddr "localhost"`,
		"BindPort 70000",
		"Key is 5 bytes, want 32",
		"ProbeTimeout 1s must be shorter than ProbeInterval 100ms",
		`Meta.Name "node-b" differs from NodeName "node-a"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
}

func TestValidateMeta(t *testing.T) {
	tests := []struct {
		name string
		meta gossip.NodeMeta
		want string // in the error; "" for valid
	}{
		{name: "empty is fine", meta: gossip.NodeMeta{}},
		{name: "host bits in pod CIDR", meta: gossip.NodeMeta{PodCIDR: netip.MustParsePrefix("10.244.1.7/24")}, want: "Meta.PodCIDR 10.244.1.7/24 has host bits set (want 10.244.1.0/24)"},
		{name: "negative memory", meta: gossip.NodeMeta{MemoryBytes: -5}, want: "Meta.MemoryBytes -5 is negative"},
		{name: "over memberlist's 512 bytes", meta: gossip.NodeMeta{Name: strings.Repeat("n", 480)}, want: "over memberlist's limit of 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := gossip.DefaultConfig()
			cfg.Key = testKey
			cfg.NodeName = "node-a"
			if tt.meta.Name != "" {
				cfg.NodeName = tt.meta.Name
			}
			cfg.Meta = tt.meta
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error with %q", err, tt.want)
			}
		})
	}
}
