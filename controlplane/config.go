package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgeplatform/surge/controlplane/autoscaling"
	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/internal/clock"
)

// Config configures one control-plane server. Make it with DefaultConfig.
type Config struct {
	// DataDir holds etcd's data, the CA, the admin client config and logs.
	// It is created with mode 0700.
	DataDir string
	// APIAddr is where the HTTPS API listens. The default, loopback only,
	// keeps a laptop's Surge private; a cluster sets a routable address.
	APIAddr string
	// EtcdEndpoints, when set, are an external etcd cluster's client URLs
	// and no etcd is embedded.
	EtcdEndpoints []string
	// EtcdCAFile, EtcdCertFile and EtcdKeyFile are the PEM files the
	// server reaches an external etcd with over TLS: the CA its
	// certificate chains to, and the client certificate and key it
	// presents. Empty: the system roots, and no client certificate.
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EtcdClientAddr and EtcdPeerAddr are where the embedded etcd listens,
	// with TLS and client certificates from the cluster CA. The peer
	// address is where the other servers' members reach this one; empty
	// is APIAddr's host (loopback when that is a wildcard), port 7072.
	EtcdClientAddr string
	EtcdPeerAddr   string
	// JoinServer, when set, is the API URL of a running server of the
	// cluster this server joins at its first start (later starts find
	// their cluster in the data dir): it presents JoinServerToken (that
	// server's DATA_DIR/server-token) over TLS that must chain to
	// JoinServerCA (the cluster CA, PEM), receives the CA, its key and the
	// tokens, and becomes an etcd member (a learner, promoted once it has
	// caught up).
	JoinServer      string
	JoinServerToken string
	JoinServerCA    []byte
	// Name is this server's etcd member name; the default is the host name.
	Name string
	// TLSSANs are extra host names or IPs for the API's certificate, beyond
	// localhost, the loopback addresses, the host name and APIAddr's host.
	TLSSANs []string
	// CompactionRetention is how much etcd history watches can resume from
	// ("1h" keeps an hour). Shorter saves disk, longer survives longer
	// client outages without a 410.
	CompactionRetention string
	// WriteUserConfig also writes the admin client config to the user's
	// config path (SURGE_CONFIG or ~/.surge/config.yaml) when none exists.
	WriteUserConfig bool
	// UserConfigPath is where WriteUserConfig writes.
	UserConfigPath string
	// PodCIDR is the range replica addresses come from; each node gets one
	// /NodeSubnetBits of it (a /24 holds 254 replicas).
	PodCIDR        string
	NodeSubnetBits int
	// Controllers tunes the reconcilers.
	Controllers controllers.Config
	// Autoscaling tunes the autoscaler.
	Autoscaling autoscaling.Config
	// GossipAddr, when set, makes the server a gossip member there
	// (HOST:PORT; port 0 picks one), so node deaths reach the node
	// controller at gossip speed. GossipJoin are members to join.
	GossipAddr string
	GossipJoin []string
	// GatewayURL is the base URL of the gateways as clients reach them,
	// e.g. "http://surge.localhost:8080": a function NAME is then served
	// at http://NAME.surge.localhost:8080 (NAME.NAMESPACE.… outside the
	// default namespace), the URL the API reports in FunctionStatus.URL.
	// Its host is the gateways' --domain. Empty reports no URL.
	GatewayURL string
	// ResolveTimeout bounds how long a deploy waits for another registry
	// to say what digest a tag names, to pin the revision to it; a slow
	// or unreachable registry leaves the revision unpinned. Images in the
	// built-in registry resolve without the network.
	ResolveTimeout time.Duration
	// Registerer takes the server's metrics (the API's, the controllers'
	// and scheduler's, the autoscaler's, etcd round trips), and the API
	// serves Gatherer at /metrics: Registerer itself when Gatherer is nil,
	// which must then be a prometheus.Gatherer too (a *prometheus.Registry).
	// It takes the metrics of one run. Nil is a private registry that also
	// has the process's collectors (telemetry.NewProcessRegistry).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// MetricsURL is where scrapers find this server's metrics, as
	// discovery (GET /v1/sd/prometheus) lists it. Empty is the API's own
	// /metrics, which needs a token that may read metrics; surge up sets
	// the one loopback address that serves every role's.
	MetricsURL string
	// Clock is the server's clock: object and token timestamps,
	// certificates, node liveness, and the pace of the server's own work
	// (the controllers' resync and debounce, the election's back-off, image
	// GC). Deadlines on I/O (etcd's start, requests in flight at shutdown)
	// stay on the wall clock. Nil is the wall clock; tests pass a fake.
	Clock clock.Clock
}

// DefaultConfig returns the configuration of a single, all-in-one server.
func DefaultConfig() Config {
	return Config{
		DataDir:             defaultDataDir(),
		APIAddr:             "127.0.0.1:7070",
		EtcdClientAddr:      "127.0.0.1:7071",
		CompactionRetention: "1h",
		WriteUserConfig:     true,
		PodCIDR:             "10.244.0.0/16",
		NodeSubnetBits:      24,
		Controllers:         controllers.DefaultConfig(),
		Autoscaling:         autoscaling.DefaultConfig(),
		ResolveTimeout:      5 * time.Second,
	}
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "surge")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "surge")
	}
	return "surge-data"
}

// withDefaults returns a copy with the empty fields filled.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.APIAddr == "" {
		c.APIAddr = d.APIAddr
	}
	if c.EtcdClientAddr == "" {
		c.EtcdClientAddr = d.EtcdClientAddr
	}
	if c.EtcdPeerAddr == "" {
		c.EtcdPeerAddr = defaultPeerAddr(c.APIAddr)
	}
	if c.CompactionRetention == "" {
		c.CompactionRetention = d.CompactionRetention
	}
	if c.PodCIDR == "" {
		c.PodCIDR = d.PodCIDR
	}
	if c.NodeSubnetBits == 0 {
		c.NodeSubnetBits = d.NodeSubnetBits
	}
	if c.Controllers == (controllers.Config{}) {
		c.Controllers = d.Controllers
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = d.ResolveTimeout
	}
	if c.Autoscaling.Tick == 0 {
		c.Autoscaling = d.Autoscaling
	}
	c.Clock = clock.Or(c.Clock)
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "surge"
		}
		c.Name = h
	}
	return c
}

// defaultPeerPort is the embedded etcd's peer port when EtcdPeerAddr is
// left empty.
const defaultPeerPort = "7072"

// defaultPeerAddr is APIAddr's host with the peer port: the address other
// servers reach this machine at, loopback when the API listens on every
// address.
func defaultPeerAddr(apiAddr string) string {
	h, _, err := net.SplitHostPort(apiAddr)
	if ip := net.ParseIP(h); err != nil || h == "" || (ip != nil && ip.IsUnspecified()) {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, defaultPeerPort)
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ flag, v string }{
		{"--api-addr", c.APIAddr}, {"--etcd-client-addr", c.EtcdClientAddr}, {"--etcd-peer-addr", c.EtcdPeerAddr},
	} {
		if a.v == "" && a.flag == "--etcd-peer-addr" {
			continue // derived from --api-addr
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s %q: want HOST:PORT", a.flag, a.v))
		}
	}
	for _, e := range c.EtcdEndpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			errs = append(errs, fmt.Errorf("--etcd-endpoints %q: want a URL like https://10.0.0.1:2379", e))
		}
	}
	for _, f := range []struct{ flag, v string }{{"--etcd-cafile", c.EtcdCAFile}, {"--etcd-certfile", c.EtcdCertFile}, {"--etcd-keyfile", c.EtcdKeyFile}} {
		if f.v != "" && len(c.EtcdEndpoints) == 0 {
			errs = append(errs, fmt.Errorf("%s %q: only for an external etcd, with --etcd-endpoints", f.flag, f.v))
		}
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		errs = append(errs, fmt.Errorf("--etcd-certfile %q and --etcd-keyfile %q: give both or neither", c.EtcdCertFile, c.EtcdKeyFile))
	}
	if h, _, err := net.SplitHostPort(c.EtcdPeerAddr); err == nil {
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("--etcd-peer-addr %q: want this machine's address as the other servers reach it, not a wildcard", c.EtcdPeerAddr))
		}
	}
	if c.JoinServer != "" {
		if u, err := url.Parse(c.JoinServer); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--join-server %q: want a running server's API URL, like https://10.0.0.1:7070", c.JoinServer))
		}
		if c.JoinServerToken == "" {
			errs = append(errs, errors.New("--join-server needs --token: the server-token of a server of the cluster"))
		}
		if len(c.JoinServerCA) == 0 {
			errs = append(errs, errors.New("--join-server needs --ca-file: the cluster CA (pki/ca.crt of a server of the cluster)"))
		}
	}
	if p, err := netip.ParsePrefix(c.PodCIDR); err != nil || !p.Addr().Is4() {
		errs = append(errs, fmt.Errorf("--pod-cidr %q: want an IPv4 CIDR like 10.244.0.0/16", c.PodCIDR))
	} else if c.NodeSubnetBits < p.Bits() || c.NodeSubnetBits > 30 {
		errs = append(errs, fmt.Errorf("node subnet /%d: want between /%d (the pod CIDR) and /30", c.NodeSubnetBits, p.Bits()))
	}
	if c.GatewayURL != "" {
		if _, err := functionURLs(c.GatewayURL); err != nil {
			errs = append(errs, fmt.Errorf("--gateway-url %q: %w", c.GatewayURL, err))
		}
	}
	if c.ResolveTimeout < 0 {
		errs = append(errs, fmt.Errorf("config ResolveTimeout %s: want >= 0", c.ResolveTimeout))
	}
	if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("--data-dir %q: want an absolute path", c.DataDir))
	}
	if c.MetricsURL != "" {
		if u, err := url.Parse(c.MetricsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("config MetricsURL %q: want http://HOST:PORT/metrics", c.MetricsURL))
		}
	}
	if c.Registerer != nil && c.Gatherer == nil {
		if _, ok := c.Registerer.(prometheus.Gatherer); !ok {
			errs = append(errs, fmt.Errorf("config Registerer %T: want one that is also a prometheus.Gatherer (a *prometheus.Registry), for /metrics", c.Registerer))
		}
	}
	return errors.Join(errs...)
}
