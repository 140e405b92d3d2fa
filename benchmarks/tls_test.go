package benchmarks

import (
	"os"
	"strings"
	"testing"
)

// TestParseH2load reads h2load's report, and refuses one whose requests
// failed (the gateway's 4xx to a request it cannot route, say).
func TestParseH2load(t *testing.T) {
	b, err := os.ReadFile("testdata/h2load-ok.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseH2load(string(b))
	if err != nil || r.rps != 3715.50 || r.proto != "h2" || r.tls != "TLSv1.3 TLS_AES_128_GCM_SHA256" {
		t.Errorf("parseH2load = %+v, %v; want 3715.50 req/s over h2, TLS 1.3 with AES-128-GCM", r, err)
	}
	bad := strings.Replace(string(b), "7431 succeeded, 0 failed", "0 succeeded, 7431 failed", 1)
	if _, err := parseH2load(bad); err == nil || !strings.Contains(err.Error(), "7431 of 7431 requests failed") {
		t.Errorf("parseH2load of failed requests: %v", err)
	}
	if _, err := parseH2load("getaddrinfo() failed: Name or service not known\n"); err == nil {
		t.Error("parseH2load of no report: no error")
	}
}
