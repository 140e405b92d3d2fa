package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/internal/telemetry"
)

func TestAdvertisedMetricsURL(t *testing.T) {
	for _, tc := range []struct{ bound, api, want string }{
		{"127.0.0.1:7074", "https://127.0.0.1:7070", "http://127.0.0.1:7074/metrics"},
		{"127.0.0.1:7074", "https://10.0.0.1:7070", ""}, // no scraper of that API reaches this loopback
		{"[::]:7074", "https://10.0.0.1:7070", "http://[::]:7074/metrics"},
		{"10.0.0.2:7074", "https://10.0.0.1:7070", "http://10.0.0.2:7074/metrics"},
	} {
		if got := advertisedMetricsURL(tc.bound, tc.api); got != tc.want {
			t.Errorf("advertisedMetricsURL(%q, %q) = %q, want %q", tc.bound, tc.api, got, tc.want)
		}
	}
}

// TestMetricsOffLoopbackNeedATokenThatMayReadThem: an agent's or a
// gateway's metrics endpoint bound beyond loopback serves only a token the
// API says may read metrics: a metrics, viewer or admin token, not the
// join token nor a forged one. A metrics token reads nothing else of the
// API.
func TestMetricsOffLoopbackNeedATokenThatMayReadThem(t *testing.T) {
	in := controlplanetest.Start(t)
	admin := in.Client()
	token := func(role string) string {
		var tr apiserver.TokenResponse
		if err := admin.Do(context.Background(), "POST", "/v1/tokens", map[string]string{"role": role}, &tr); err != nil {
			t.Fatalf("create a %s token: %v", role, err)
		}
		return tr.Secret
	}
	metricsTok := token("metrics")
	reg := telemetry.NewProcessRegistry("test")
	m, err := listenMetrics("0.0.0.0:0", reg, *in.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(m.ln.Addr().String(), "]:")
	if port == "" {
		_, port, _ = strings.Cut(m.ln.Addr().String(), ":")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- withMetrics(ctx, m, func(ctx context.Context) error { <-ctx.Done(); return nil }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		who, token string
		code       int
	}{
		{"nobody", "", http.StatusUnauthorized},
		{"a forged token", "abcdefabcdef.forged", http.StatusUnauthorized},
		{"the join token", in.Server().JoinToken(), http.StatusUnauthorized},
		{"a metrics token", metricsTok, http.StatusOK},
		{"a viewer token", token("viewer"), http.StatusOK},
		{"the admin token", in.AdminConfig().Token, http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+port+"/metrics", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.code == http.StatusOK) != strings.Contains(string(body), "surge_build_info") {
			t.Errorf("%s: %d %.80q, want %d", tc.who, resp.StatusCode, body, tc.code)
		}
	}

	mc := in.ClientWithToken(metricsTok)
	defer closeIdle(mc)
	if _, err := client.List[api.Function](context.Background(), mc, "default", nil); err == nil {
		t.Error("a metrics token listed functions")
	}
	var groups []api.TargetGroup
	if err := mc.Do(context.Background(), "GET", "/v1/sd/prometheus", nil, &groups); err != nil {
		t.Errorf("a metrics token reads discovery: %v", err)
	}
}

func closeIdle(c *client.Client) {
	if t, ok := c.Transport().(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}
