package api

import (
	"net/netip"
	"testing"
)

func TestNormalizeMetricsURL(t *testing.T) {
	at := netip.MustParseAddr("10.0.0.7")
	for _, tc := range []struct{ in, want string }{
		{"http://0.0.0.0:7074/metrics", "http://10.0.0.7:7074/metrics"},
		{"http://[::]:7074/metrics", "http://10.0.0.7:7074/metrics"},
		{"http://10.0.0.7:7074/metrics", "http://10.0.0.7:7074/metrics"},
		{"http://[::ffff:10.0.0.7]:7074/metrics", "http://10.0.0.7:7074/metrics"},
		{"http://127.0.0.1:7074/metrics", "http://127.0.0.1:7074/metrics"},
		{"http://[::1]:7075/metrics", "http://[::1]:7075/metrics"},
		{"http://10.0.0.8:7074/metrics", ""},            // another machine
		{"http://169.254.169.254:80/metrics", ""},       // metadata service
		{"https://10.0.0.7:7074/metrics", ""},           // not what the endpoint speaks
		{"http://10.0.0.7:7074/other", ""},              // another path
		{"http://10.0.0.7/metrics", ""},                 // no port
		{"http://10.0.0.7:0/metrics", ""},               // port 0
		{"http://example.com:7074/metrics", ""},         // a name
		{"http://user@10.0.0.7:7074/metrics", ""},       // a user
		{"http://10.0.0.7:7074/metrics?x=1", ""},        // a query
		{"http://[fe80::1%eth0]:7074/metrics", ""},      // a zone
		{"http://10.0.0.7:7074/metrics/../metrics", ""}, // anything before the suffix
	} {
		got, err := NormalizeMetricsURL(tc.in, at)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("NormalizeMetricsURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := NormalizeMetricsURL("http://0.0.0.0:7074/metrics", netip.Addr{}); err == nil {
		t.Error("a wildcard with no address to put in its place was taken")
	}
}
