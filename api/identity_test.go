package api_test

import (
	"net/netip"
	"testing"

	"github.com/surgeplatform/surge/api"
)

func TestValidAgentURL(t *testing.T) {
	at := netip.MustParseAddr("10.0.0.5")
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://10.0.0.5:7073", true},
		{"http://10.0.0.5:7073", false},
		{"https://10.0.0.6:7073", false},
		{"https://10.0.0.5", false},
		{"https://10.0.0.5:0", false},
		{"https://10.0.0.5:7073/", false},
		{"https://10.0.0.5:7073/x?y", false},
		{"https://user@10.0.0.5:7073", false},
		{"https://node-a:7073", false},
		{"https://[::ffff:10.0.0.5]:7073", true},
		{"", false},
	} {
		if got := api.ValidAgentURL(tc.url, at); got != tc.ok {
			t.Errorf("ValidAgentURL(%q, %s) = %v, want %v", tc.url, at, got, tc.ok)
		}
	}
	if api.ValidAgentURL("https://10.0.0.5:7073", netip.Addr{}) {
		t.Error("an agent URL is valid for a node with no address")
	}
}

func TestNodeCommonName(t *testing.T) {
	if cn := api.NodeCommonName("node-a"); cn != "surge:node:node-a" {
		t.Errorf("NodeCommonName = %q", cn)
	}
	for _, tc := range []struct {
		cn, node string
		ok       bool
	}{
		{"surge:node:node-a", "node-a", true},
		{"surge:node:", "", false},
		{"surge:node:Node_A", "", false},
		{"surge:apiserver", "", false},
		{"node-a", "", false},
	} {
		if node, ok := api.NodeFromCommonName(tc.cn); node != tc.node || ok != tc.ok {
			t.Errorf("NodeFromCommonName(%q) = %q, %v; want %q, %v", tc.cn, node, ok, tc.node, tc.ok)
		}
	}
}
