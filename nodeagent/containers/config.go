package containers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/network"
)

// Config configures a Runtime. Make it with DefaultConfig.
type Config struct {
	// ContainerdAddress is the socket of the containerd to use. When
	// nothing answers there and PrivateContainerd is set, the runtime uses
	// (or starts) one under StateDir instead.
	ContainerdAddress string
	// PrivateContainerd lets New start a containerd of its own, as a child
	// process with root, state, config and socket under StateDir/containerd,
	// when none answers at ContainerdAddress. Off, New fails instead.
	PrivateContainerd bool
	// ContainerdBinary is the containerd executable for the private one,
	// looked up in PATH when not absolute.
	ContainerdBinary string
	// Namespace is the containerd namespace of every object the runtime
	// makes; List and RemoveOrphans see only this one.
	Namespace string
	// StateDir holds replica logs (logs/), the network's records and
	// pinned namespaces (network/), per-replica hosts and resolv.conf files
	// (replicas/) and the private containerd (containerd/). It must outlive
	// the agent process. Required, absolute.
	StateDir string
	// Snapshotter unpacks images and holds container root filesystems.
	// overlayfs shares image layers between replicas at no copy cost.
	Snapshotter string
	// Runtime is the containerd runtime (shim) that runs tasks.
	Runtime string

	// RegistryHost is the control plane's registry, host:port as it appears
	// in image references (the API address). Only requests to it carry
	// RegistryToken or RegistryCertificate and trust RegistryCA; other
	// registries are pulled anonymously with the system roots. Required
	// when any of them is set.
	RegistryHost string
	// RegistryMirrors are the control plane's other servers, host:port:
	// each holds the same registry. An image named at RegistryHost or at
	// any of them is pulled from the host it names first, then from the
	// others, so that a pull outlives the server it names.
	RegistryMirrors []string
	// RegistryToken is sent as "Authorization: Bearer TOKEN" to
	// RegistryHost.
	RegistryToken string
	// RegistryCA is the PEM bundle RegistryHost's certificate chains to
	// (the cluster CA). Empty trusts the system roots.
	RegistryCA []byte
	// RegistryCertificate, when set, returns the client certificate to
	// present to RegistryHost (the node's, which is how a node agent
	// authenticates to the control plane). It is called at each TLS
	// handshake, from pulls' goroutines, and must not block; nil is none.
	RegistryCertificate func() *tls.Certificate

	// LogMaxSize caps what one replica's log keeps on disk: the live file
	// and its rotated ones together, its newest lines. The live file is
	// rotated at its share, LogMaxSize/(LogMaxFiles+1), and the copy costs
	// a read and a write of that much. Bigger keeps more history for
	// surge logs; the node's disk holds this much per replica.
	LogMaxSize int64
	// LogNodeMaxSize caps the logs of every replica on the node together:
	// past it, the rotated files whose newest line is oldest go first,
	// then the live logs written to least recently are emptied. Size it
	// to the disk under StateDir; at least LogMaxSize.
	LogNodeMaxSize int64
	// LogMaxFiles is how many rotated files (ID.log.1 … ID.log.N) are kept
	// beside the live one. 0 truncates without keeping any. More files
	// make smaller rotations (cheaper copies) and a finer-grained trim.
	LogMaxFiles int
	// LogRotateInterval is how often RotateLogs checks sizes and caps; a
	// replica can write this long at full speed past its cap, and the
	// node's logs past theirs. Each check costs a directory read and a
	// stat per file.
	LogRotateInterval time.Duration
	// LogPollInterval is how often a following log reader looks for new
	// lines; lower is fresher and costs a stat per reader per interval.
	LogPollInterval time.Duration

	// TmpSize bounds the tmpfs at /tmp, the only writable place in a
	// replica besides /run and /dev/shm; it counts against the replica's
	// memory limit.
	TmpSize int64
	// DefaultPidsLimit applies when a Spec sets no PidsLimit: a fork bomb
	// stops there instead of at the node's limit.
	DefaultPidsLimit int64
	// StartupCPUBoost starts replicas without their CPU quota and weight
	// (shares), and lets ApplyCPULimit set them once they are Ready: a
	// cold start throttled to 100m takes twice as long (runc's set-up and
	// the function's own start run under the quota), and at 100m's weight
	// (a tenth of a core's) a busy node starves it further. The boost ends
	// at Ready or after StartupCPUBoostMax, whichever comes first. Off,
	// the limits apply from the first instruction.
	StartupCPUBoost bool
	// StartupCPUBoostMax is the longest a replica's task runs boosted
	// after a start or a restart: a replica not Ready by then gets its CPU
	// quota and weight from the runtime itself. Longer lets a slow
	// start-up (a large runtime, a cold JIT) finish at full speed; shorter
	// bounds what a replica that never becomes Ready takes from its
	// neighbours: this long per start, which the agent retries after its
	// StartTimeout (1m) and a back-off. Beyond the agent's StartTimeout it
	// never fires: the start has failed and the container is gone.
	StartupCPUBoostMax time.Duration
	// DefaultUID and DefaultGID run replicas whose image names no user or
	// names root. 65532 is distroless' "nonroot".
	DefaultUID, DefaultGID uint32

	// Network configures replica networking. StateDir defaults to
	// StateDir/network, Log to Log and Clock to Clock.
	Network network.Config

	// Log receives the one line that says which containerd is used, and
	// cleanup failures nobody returns to.
	Log *slog.Logger
	// Clock times the stop grace, log rotation, log following and the
	// private containerd's start and stop; nil is the wall clock. I/O
	// deadlines on containerd calls stay on the wall clock: they bound
	// real work.
	Clock clock.Clock
}

// DefaultConfig returns a configuration with every default filled but
// StateDir and the registry credentials.
func DefaultConfig() Config {
	return Config{
		ContainerdAddress: "/run/containerd/containerd.sock",
		PrivateContainerd: true,
		ContainerdBinary:  "containerd",
		Namespace:         Namespace,
		Snapshotter:       "overlayfs",
		Runtime:           "io.containerd.runc.v2",
		LogMaxSize:        10 << 20,
		LogNodeMaxSize:    1 << 30,
		LogMaxFiles:       3,
		LogRotateInterval: time.Second,
		LogPollInterval:   250 * time.Millisecond,
		TmpSize:           64 << 20,
		DefaultPidsLimit:  1024,
		StartupCPUBoost:   true,
		// Ten times a slow Go cold start; a sixth of the agent's start
		// timeout.
		StartupCPUBoostMax: 10 * time.Second,
		DefaultUID:         65532,
		DefaultGID:         65532,
		Network:            network.DefaultConfig(),
		Log:                slog.New(slog.DiscardHandler),
		Clock:              clock.Real(),
	}
}

// WithDefaults fills zero fields from DefaultConfig on a copy, as New
// does before Validate; callers check a Config ahead of New with
// c.WithDefaults().Validate(). Booleans and LogMaxFiles keep their zero
// values: zero is a meaningful choice.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.ContainerdAddress == "" {
		c.ContainerdAddress = d.ContainerdAddress
	}
	c.ContainerdAddress = strings.TrimPrefix(c.ContainerdAddress, "unix://")
	if c.ContainerdBinary == "" {
		c.ContainerdBinary = d.ContainerdBinary
	}
	if c.Namespace == "" {
		c.Namespace = d.Namespace
	}
	if c.Snapshotter == "" {
		c.Snapshotter = d.Snapshotter
	}
	if c.Runtime == "" {
		c.Runtime = d.Runtime
	}
	if c.LogMaxSize == 0 {
		c.LogMaxSize = d.LogMaxSize
	}
	if c.LogNodeMaxSize == 0 {
		c.LogNodeMaxSize = d.LogNodeMaxSize
	}
	if c.LogRotateInterval == 0 {
		c.LogRotateInterval = d.LogRotateInterval
	}
	if c.LogPollInterval == 0 {
		c.LogPollInterval = d.LogPollInterval
	}
	if c.TmpSize == 0 {
		c.TmpSize = d.TmpSize
	}
	if c.DefaultPidsLimit == 0 {
		c.DefaultPidsLimit = d.DefaultPidsLimit
	}
	if c.StartupCPUBoostMax == 0 {
		c.StartupCPUBoostMax = d.StartupCPUBoostMax
	}
	if c.DefaultUID == 0 {
		c.DefaultUID = d.DefaultUID
	}
	if c.DefaultGID == 0 {
		c.DefaultGID = d.DefaultGID
	}
	c.RegistryCA = append([]byte(nil), c.RegistryCA...)
	if c.Log == nil {
		c.Log = d.Log
	}
	c.Clock = clock.Or(c.Clock)
	if c.Network.StateDir == "" && c.StateDir != "" {
		c.Network.StateDir = filepath.Join(c.StateDir, "network")
	}
	if c.Network.Log == nil {
		c.Network.Log = c.Log
	}
	if c.Network.Clock == nil {
		c.Network.Clock = c.Clock
	}
	return c
}

// Validate reports every bad field at once. The network's fields are
// checked by network.New.
func (c Config) Validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("runtime %s %v: %s", field, v, want))
	}
	if !filepath.IsAbs(c.ContainerdAddress) {
		bad("ContainerdAddress", fmt.Sprintf("%q", c.ContainerdAddress), "want an absolute unix socket path")
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("StateDir", fmt.Sprintf("%q", c.StateDir), "want an absolute path")
	} else if len(filepath.Join(c.StateDir, "containerd", "containerd.sock.ttrpc")) > 100 {
		// A unix socket path has 108 bytes; the private containerd's
		// sockets live here.
		bad("StateDir", fmt.Sprintf("%q", c.StateDir), "too long for the private containerd's socket path; want under 70 bytes")
	}
	if err := identifiers.Validate(c.Namespace); err != nil {
		bad("Namespace", fmt.Sprintf("%q", c.Namespace), "want a containerd identifier (letters, digits, '.', '_', '-')")
	}
	if c.Snapshotter == "" {
		bad("Snapshotter", `""`, "want a snapshotter name such as overlayfs")
	}
	if c.Runtime == "" {
		bad("Runtime", `""`, "want a runtime name such as io.containerd.runc.v2")
	}
	if (c.RegistryToken != "" || len(c.RegistryCA) > 0 || c.RegistryCertificate != nil) && c.RegistryHost == "" {
		bad("RegistryHost", `""`, "want the registry's host:port when RegistryToken, RegistryCA or RegistryCertificate is set, so they go to that registry only")
	}
	if strings.Contains(c.RegistryHost, "/") {
		bad("RegistryHost", fmt.Sprintf("%q", c.RegistryHost), "want host[:port] without scheme or path")
	}
	for _, m := range c.RegistryMirrors {
		if m == "" || strings.Contains(m, "/") {
			bad("RegistryMirrors", fmt.Sprintf("%q", m), "want host[:port] without scheme or path")
		}
	}
	if strings.ContainsAny(c.RegistryToken, "\r\n") {
		bad("RegistryToken", "(redacted)", "must not contain line breaks")
	}
	if len(c.RegistryCA) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.RegistryCA) {
		bad("RegistryCA", fmt.Sprintf("(%d bytes)", len(c.RegistryCA)), "want PEM certificates")
	}
	if c.LogMaxSize < 4096 {
		bad("LogMaxSize", c.LogMaxSize, "want at least 4096 bytes")
	}
	if c.LogNodeMaxSize < c.LogMaxSize {
		bad("LogNodeMaxSize", c.LogNodeMaxSize, fmt.Sprintf("want at least LogMaxSize (%d bytes)", c.LogMaxSize))
	}
	if c.LogMaxFiles < 0 || c.LogMaxFiles > 100 {
		bad("LogMaxFiles", c.LogMaxFiles, "want 0..100")
	} else if c.LogMaxSize >= 4096 && c.logFileShare() < 1024 {
		bad("LogMaxFiles", c.LogMaxFiles, fmt.Sprintf("want at most %d: each file's share of LogMaxSize at least 1 KiB", c.LogMaxSize/1024-1))
	}
	if c.LogRotateInterval < 10*time.Millisecond {
		bad("LogRotateInterval", c.LogRotateInterval, "want at least 10ms")
	}
	if c.LogPollInterval < time.Millisecond {
		bad("LogPollInterval", c.LogPollInterval, "want at least 1ms")
	}
	if c.TmpSize < 1<<20 {
		bad("TmpSize", c.TmpSize, "want at least 1 MiB")
	}
	if c.StartupCPUBoostMax < 0 {
		bad("StartupCPUBoostMax", c.StartupCPUBoostMax, "want a positive duration, or 0 for the default")
	}
	if c.DefaultPidsLimit < 8 {
		bad("DefaultPidsLimit", c.DefaultPidsLimit, "want at least 8")
	}
	if c.DefaultUID == 0 || c.DefaultGID == 0 {
		bad("DefaultUID/DefaultGID", fmt.Sprintf("%d/%d", c.DefaultUID, c.DefaultGID), "want a non-root id")
	}
	return errors.Join(errs...)
}

// validateSpec reports every bad field of s at once.
func validateSpec(s Spec) error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("spec %s %v: %s", field, v, want))
	}
	if err := identifiers.Validate(s.ID); err != nil || len(s.ID) > 63 {
		bad("ID", fmt.Sprintf("%q", s.ID), "want 1 to 63 letters, digits, '.', '_', '-' (it names the container, its netns and its hostname)")
	}
	if s.Image == "" {
		bad("Image", `""`, "want an image reference")
	}
	if s.Port < 0 || s.Port > 65535 {
		bad("Port", s.Port, "want 1..65535, or 0 for 8080")
	}
	if s.MilliCPU < 0 {
		bad("MilliCPU", s.MilliCPU, "want >= 0 (0: no quota)")
	}
	if s.MemoryBytes != 0 && s.MemoryBytes < 4<<20 {
		bad("MemoryBytes", s.MemoryBytes, "want 0 (no limit) or at least 4 MiB")
	}
	if s.PidsLimit < 0 {
		bad("PidsLimit", s.PidsLimit, "want >= 0 (0: the runtime's default)")
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			bad("Env", fmt.Sprintf("%q", e), "want KEY=VALUE")
		}
	}
	return errors.Join(errs...)
}
