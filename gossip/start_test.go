package gossip_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/surgeplatform/surge/gossip"
	"github.com/surgeplatform/surge/gossip/gossiptest"
)

// TestStartJoinsSeedsAndStopWaits runs two roles as every role runs:
// Start with the role's values. The second finds the first through its
// seed; Stop leaves (the first is told at once) and returns only once the
// member has stopped.
func TestStartJoinsSeedsAndStopWaits(t *testing.T) {
	server, err := gossip.Start(gossip.Options{
		Role: gossip.RoleServer, NodeName: "server-a", Addr: "127.0.0.1:0",
		Key: testKey, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatalf("Start(server): %v", err)
	}
	defer server.Stop()
	rec := &gossiptest.Recorder{}
	gw, err := gossip.Start(gossip.Options{
		Role: gossip.RoleGateway, NodeName: "gw-b", Addr: "127.0.0.1:0",
		Seeds: []string{server.LocalNode().Addr.String()}, Key: testKey,
		Handler: rec, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatalf("Start(gateway): %v", err)
	}
	defer gw.Stop()
	waitFor(t, 10*time.Second, "the gateway to be told of the server", func() bool { return rec.HasNodeEvent(gossip.NodeJoin, "server-a") })
	for _, m := range gw.Members() {
		if m.Name == "server-a" && m.Meta.Role != gossip.RoleServer {
			t.Errorf("the gateway sees server-a as a %q", m.Meta.Role)
		}
	}
	if got := gw.LocalNode().Meta.Role; got != gossip.RoleGateway {
		t.Errorf("the gateway's own role is %q", got)
	}

	gw.Stop()
	select {
	case <-gw.Done():
	default:
		t.Error("Stop returned before the member stopped")
	}
	gw.Stop() // a second Stop is harmless
	waitFor(t, 10*time.Second, "the server to see the gateway leave", func() bool {
		for _, m := range server.Members() {
			if m.Name == "gw-b" {
				return m.State == gossip.MemberLeft
			}
		}
		return false
	})
}

func TestStartReportsEveryBadOption(t *testing.T) {
	_, err := gossip.Start(gossip.Options{Role: "worker", NodeName: "n", Addr: "localhost:99999", Key: []byte("short")})
	if !errors.Is(err, gossip.ErrInvalidConfig) {
		t.Fatalf("Start = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{
		`Addr "localhost:99999": host "localhost" is not an IP address`,
		`Addr "localhost:99999": port "99999" is not 0-65535`,
		`Role "worker"`,
		"Key is 5 bytes, want 32",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start's error lacks %q:\n%v", want, err)
		}
	}
	if err := (gossip.Options{Role: gossip.RoleAgent, NodeName: "n", Addr: "7946", Key: testKey}).Validate(); err == nil || !strings.Contains(err.Error(), `Addr "7946" is not HOST:PORT`) {
		t.Errorf("Validate of an address without a port = %v", err)
	}
}
