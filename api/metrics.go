package api

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MetricsPath is where every role serves its metrics.
const MetricsPath = "/metrics"

// NormalizeMetricsURL checks u, a role's metrics endpoint as the role
// reports it (a node in its status, a gateway in its stats), and returns
// it as discovery lists it. u must be http://HOST:PORT/metrics, HOST an IP:
// at, the role's own address as the API server knows it (the node's
// certified address, the address a gateway's report came from), or a
// loopback address; a wildcard host (0.0.0.0, ::) becomes at. A role may
// not point scrapers, which present their token, anywhere else.
func NormalizeMetricsURL(u string, at netip.Addr) (string, error) {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok || !strings.HasSuffix(rest, MetricsPath) {
		return "", fmt.Errorf("%q: want http://HOST:PORT%s", u, MetricsPath)
	}
	host, port, err := net.SplitHostPort(strings.TrimSuffix(rest, MetricsPath))
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n == 0 {
		return "", fmt.Errorf("%q: want http://HOST:PORT%s with a port", u, MetricsPath)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("%q: the host must be an IP address", u)
	}
	at = at.Unmap()
	switch ip = ip.Unmap(); {
	case ip.IsUnspecified():
		if !at.IsValid() {
			return "", fmt.Errorf("%q: a wildcard host, and no address to put in its place", u)
		}
		ip = at
	case ip.IsLoopback(), ip == at:
	default:
		return "", fmt.Errorf("%q: the host must be the reporter's own address %s, or loopback", u, at)
	}
	return "http://" + net.JoinHostPort(ip.String(), port) + MetricsPath, nil
}

// TargetGroup is one entry of GET /v1/sd/prometheus, in Prometheus' HTTP
// service discovery format: targets (HOST:PORT) and their labels, among
// which Prometheus' own __scheme__ and __metrics_path__.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}
