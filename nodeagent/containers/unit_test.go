package containers

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/go-cmp/cmp"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/surgeplatform/surge/internal/clock"
	"github.com/surgeplatform/surge/nodeagent/network"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.StateDir = "/var/lib/surge/agent"
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"registry with host", func(c *Config) {
			c.RegistryHost, c.RegistryToken = "127.0.0.1:7070", "tok"
		}, nil},
		{"token without host", func(c *Config) { c.RegistryToken = "tok" }, []string{"RegistryHost"}},
		{"certificate without host", func(c *Config) {
			c.RegistryCertificate = func() *tls.Certificate { return nil }
		}, []string{"RegistryHost"}},
		{"every bad field at once", func(c *Config) {
			c.ContainerdAddress = "run/containerd.sock"
			c.StateDir = "rel"
			c.Namespace = "a/b"
			c.RegistryHost = "https://x/"
			c.RegistryToken = "a\nb"
			c.RegistryCA = []byte("not pem")
			c.LogMaxSize = 10
			c.LogMaxFiles = -1
			c.LogRotateInterval = time.Nanosecond
			c.LogPollInterval = time.Nanosecond
			c.TmpSize = 1
			c.DefaultPidsLimit = 2
			c.StartupCPUBoostMax = -time.Second
		}, []string{"ContainerdAddress", "StateDir", "Namespace", "RegistryHost", "RegistryToken", "RegistryCA",
			"LogMaxSize", "LogMaxFiles", "LogRotateInterval", "LogPollInterval", "TmpSize", "DefaultPidsLimit",
			"StartupCPUBoostMax"}},
		{"state dir too long for a socket", func(c *Config) { c.StateDir = "/" + strings.Repeat("x", 90) }, []string{"StateDir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.WithDefaults().Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "a\nb") {
				t.Errorf("Validate() leaks the token: %q", err)
			}
		})
	}
}

func TestWithDefaultsFillsNetwork(t *testing.T) {
	c := Config{StateDir: "/s"}.WithDefaults()
	if c.Network.StateDir != "/s/network" || c.Network.Log == nil || c.Clock == nil || c.Namespace != Namespace {
		t.Errorf("WithDefaults: %+v", c)
	}
	fake := clock.NewFake()
	if c := (Config{StateDir: "/s", Clock: fake}).WithDefaults(); c.Network.Clock != fake {
		t.Errorf("WithDefaults: network clock %v, want the runtime's", c.Network.Clock)
	}
}

func TestValidateSpec(t *testing.T) {
	if err := validateSpec(Spec{ID: "hello-00001-abc", Image: "x"}); err != nil {
		t.Errorf("minimal spec: %v", err)
	}
	err := validateSpec(Spec{ID: "bad/id", Port: 70000, MilliCPU: -1, MemoryBytes: 10, PidsLimit: -1, Env: []string{"NOEQUALS"}})
	for _, w := range []string{"ID", "Image", "Port", "MilliCPU", "MemoryBytes", "PidsLimit", "Env"} {
		if err == nil || !strings.Contains(err.Error(), "spec "+w) {
			t.Errorf("validateSpec = %v, want it to name %s", err, w)
		}
	}
}

func TestResolveUser(t *testing.T) {
	fsys := fstest.MapFS{
		"etc/passwd": {Data: []byte("root:x:0:0::/:/bin/sh\napp:x:1234:1235::/:/bin/sh\n")},
		"etc/group":  {Data: []byte("root:x:0:\nstaff:x:50:\n")},
	}
	tests := []struct {
		user     string
		needFS   bool
		uid, gid uint32
		err      bool
	}{
		{user: "", uid: 65532, gid: 65532},
		{user: "0", uid: 65532, gid: 65532},
		{user: "0:0", uid: 65532, gid: 65532},
		{user: "1000", uid: 1000, gid: 1000},
		{user: "1000:0", uid: 1000, gid: 0},
		{user: "app", needFS: true, uid: 1234, gid: 1235},
		{user: "app:staff", needFS: true, uid: 1234, gid: 50},
		{user: "1000:staff", needFS: true, uid: 1000, gid: 50},
		{user: "root", needFS: true, uid: 65532, gid: 65532},
		{user: "nobody", needFS: true, err: true},
		{user: ":5", err: true},
		{user: "99999999999", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			_, _, needFS, err := resolveUser(tt.user, nil, 65532, 65532)
			if needFS != tt.needFS {
				t.Fatalf("needFS = %v, want %v (err %v)", needFS, tt.needFS, err)
			}
			uid, gid, _, err := resolveUser(tt.user, fsys, 65532, 65532)
			if tt.err {
				if err == nil {
					t.Fatalf("want an error, got %d:%d", uid, gid)
				}
				return
			}
			if err != nil || uid != tt.uid || gid != tt.gid {
				t.Fatalf("= %d:%d, %v; want %d:%d", uid, gid, err, tt.uid, tt.gid)
			}
		})
	}
}

// genSpec generates the OCI spec Start would, without containerd.
func genSpec(t *testing.T, in specInput) *oci.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "surge")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: in.spec.ID}, specOpts(in)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSpecHardening(t *testing.T) {
	img := &imageInfo{
		config: ocispec.ImageConfig{Entrypoint: []string{"/app"}, Cmd: []string{"serve"}, Env: []string{"PATH=/bin", "A=image"}, WorkingDir: "/w"},
		uid:    65532, gid: 65532,
	}
	in := specInput{
		spec:  Spec{ID: "r1", Env: []string{"A=spec", "PORT=1", "B=2"}, MilliCPU: 250, MemoryBytes: 64 << 20},
		image: img, att: network.Attachment{NetNS: "/state/netns/cni-1", IP: "10.0.0.2"},
		port: 8080, hosts: "/state/replicas/r1/hosts", tmpSize: 32 << 20, pidLimit: 100, noFile: 4096,
	}
	s := genSpec(t, in)

	if diff := cmp.Diff([]string{"/app", "serve"}, s.Process.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PATH=/bin", "A=spec", "PORT=8080", "B=2"}, s.Process.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if s.Process.Cwd != "/w" || s.Hostname != "r1" {
		t.Errorf("cwd %q hostname %q", s.Process.Cwd, s.Hostname)
	}
	if s.Process.User.UID != 65532 || s.Process.User.GID != 65532 {
		t.Errorf("user %+v", s.Process.User)
	}
	if !s.Root.Readonly || !s.Process.NoNewPrivileges {
		t.Errorf("readonly rootfs %v, no_new_privs %v", s.Root.Readonly, s.Process.NoNewPrivileges)
	}
	c := s.Process.Capabilities
	if len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities %+v, want none", c)
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || len(s.Linux.Seccomp.Syscalls) == 0 {
		t.Errorf("seccomp %+v, want containerd's default profile", s.Linux.Seccomp)
	}
	if goruntime.GOARCH == "amd64" && !slices.Equal(s.Linux.Seccomp.Architectures, []specs.Arch{specs.ArchX86_64}) {
		t.Errorf("seccomp architectures %v, want the native x86-64 ABI alone", s.Linux.Seccomp.Architectures)
	}
	// The profile allows by the capabilities held: with none, no mount.
	for _, sc := range s.Linux.Seccomp.Syscalls {
		if sc.Action == specs.ActAllow && slices.Contains(sc.Names, "mount") {
			t.Errorf("seccomp allows mount without CAP_SYS_ADMIN")
		}
	}
	res := s.Linux.Resources
	if *res.Memory.Limit != 64<<20 || *res.CPU.Shares != 256 || *res.CPU.Quota != 25000 || *res.CPU.Period != 100000 || *res.Pids.Limit != 100 {
		t.Errorf("resources memory %d shares %d quota %d/%d pids %d", *res.Memory.Limit, *res.CPU.Shares, *res.CPU.Quota, *res.CPU.Period, *res.Pids.Limit)
	}
	// With the start-up boost, the memory and pids limits stay; the CPU
	// quota and weight wait for ApplyCPULimit.
	in.boost = true
	if cpu := genSpec(t, in).Linux.Resources.CPU; cpu != nil && (cpu.Shares != nil || cpu.Quota != nil) {
		t.Errorf("boosted cpu resources %+v, want no shares and no quota", cpu)
	}
	if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool {
		return n.Type == specs.NetworkNamespace && n.Path == "/state/netns/cni-1"
	}) {
		t.Errorf("namespaces %+v, want the replica's netns", s.Linux.Namespaces)
	}
	var tmp *specs.Mount
	for i, m := range s.Mounts {
		if m.Type == "bind" && m.Source != "/state/replicas/r1/hosts" {
			t.Errorf("bind mount from the host: %+v", m)
		}
		if m.Destination == "/tmp" {
			tmp = &s.Mounts[i]
		}
	}
	if tmp == nil || tmp.Type != "tmpfs" || !slices.Contains(tmp.Options, "size=33554432") {
		t.Errorf("/tmp mount %+v, want a 32 MiB tmpfs", tmp)
	}
	if !slices.Contains(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 4096}) {
		t.Errorf("rlimits %+v", s.Process.Rlimits)
	}
}

func TestSpecArgsAndHostNetwork(t *testing.T) {
	img := &imageInfo{config: ocispec.ImageConfig{Entrypoint: []string{"/app"}, Cmd: []string{"serve"}}, uid: 1, gid: 1}
	for _, tt := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/app", "serve"}},
		{nil, []string{"forktest"}, []string{"/app", "forktest"}},
		{[]string{"/bin/other"}, nil, []string{"/bin/other"}},
		{[]string{"/bin/other"}, []string{"x"}, []string{"/bin/other", "x"}},
	} {
		s := genSpec(t, specInput{spec: Spec{ID: "r", Command: tt.command, Args: tt.args}, image: img, port: 1, tmpSize: 1 << 20, pidLimit: 10, noFile: 1024})
		if diff := cmp.Diff(tt.want, s.Process.Args); diff != "" {
			t.Errorf("command %v args %v (-want +got):\n%s", tt.command, tt.args, diff)
		}
		if s.Linux.Resources.CPU != nil || s.Linux.Resources.Memory != nil {
			t.Errorf("limits set without MilliCPU/MemoryBytes: %+v", s.Linux.Resources)
		}
		if slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace }) {
			t.Errorf("host network mode has a network namespace")
		}
	}
	ctx := namespaces.WithNamespace(context.Background(), "surge")
	_, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "r"}, specOpts(specInput{spec: Spec{ID: "r"}, image: &imageInfo{}, noFile: 1})...)
	if err == nil {
		t.Errorf("an image without entrypoint or cmd: want an error")
	}
}

func TestResolvConfAndHosts(t *testing.T) {
	host := []byte("# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch example.com\n")
	got, ok := resolvConf(host, true)
	if !ok || string(got) != "# comment\nnameserver 10.0.0.1\nsearch example.com\n" {
		t.Errorf("own netns: %q, %v", got, ok)
	}
	if _, ok := resolvConf([]byte("nameserver 127.0.0.53\n"), true); ok {
		t.Errorf("only a loopback nameserver: want none")
	}
	if got, ok := resolvConf(host, false); !ok || string(got) != string(host) {
		t.Errorf("host netns: %q", got)
	}
	if h := string(hostsFile("r1", "10.0.0.2")); !strings.Contains(h, "10.0.0.2\tr1\n") || !strings.Contains(h, "127.0.0.1\tlocalhost") {
		t.Errorf("hosts %q", h)
	}
}

func TestPrivateConfig(t *testing.T) {
	c := string(privateConfig("/s/containerd"))
	for _, w := range []string{`root = "/s/containerd/root"`, `state = "/s/containerd/state"`, `address = "/s/containerd/containerd.sock"`, `disabled_plugins = ["io.containerd.grpc.v1.cri"]`} {
		if !strings.Contains(c, w) {
			t.Errorf("config lacks %s:\n%s", w, c)
		}
	}
}

// logRuntime is a Runtime with only what the log code uses.
func logRuntime(t *testing.T, keep int) *Runtime {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.LogMaxSize = 4096
	cfg.LogMaxFiles = keep
	cfg.LogPollInterval = time.Millisecond
	cfg = cfg.WithDefaults()
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &Runtime{cfg: cfg}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestRotateKeepsNFiles(t *testing.T) {
	r := logRuntime(t, 2)
	p := r.LogPath("a")
	for i, chunk := range []string{"one\n", "two\n", "three\n"} {
		appendFile(t, p, strings.Repeat(chunk, 2000))
		if err := r.enforceLogCaps(); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(p); st.Size() != 0 {
			t.Fatalf("round %d: live file %d bytes", i, st.Size())
		}
	}
	// Each write passed the cap: the rotated files hold its newest lines.
	for name, want := range map[string]string{".1": "three\n", ".2": "three\n"} {
		b, err := os.ReadFile(p + name)
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s: %q…, %v; want %q…", name, b[:min(len(b), 10)], err, want)
		}
	}
	if _, err := os.Stat(p + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".3 exists")
	}
	// Under the limit nothing happens.
	appendFile(t, p, "small\n")
	if err := r.enforceLogCaps(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "small\n" {
		t.Errorf("small file rotated: %q", b)
	}
	if err := r.removeLogs("a"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 0 {
		t.Errorf("files after removeLogs: %v", ents)
	}
}

func TestFollowAcrossRotationAndRemoval(t *testing.T) {
	r := logRuntime(t, 1)
	p := r.LogPath("f")
	appendFile(t, p, "old-1\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := r.OpenLogs(ctx, "f", true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-ctx.Done():
			t.Fatal("no line")
			return ""
		}
	}
	if l := next(); l != "old-1" {
		t.Fatalf("first line %q", l)
	}
	// Written, then rotated before the follower polls again: the tail is
	// read from the rotated copy, then the live file from its start.
	appendFile(t, p, "unread-before-rotation\n")
	if err := r.rotate(p); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, "after-rotation\n")
	var got []string
	for len(got) < 2 {
		got = append(got, next())
	}
	// The follower may have read the line before the rotation.
	if got[len(got)-1] != "after-rotation" || !slices.Contains(got, "unread-before-rotation") {
		t.Errorf("lines across rotation %q", got)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-lines; ok {
		t.Errorf("follower went on after the log was removed")
	}
}

func TestOpenLogsNoFollowAndClose(t *testing.T) {
	r := logRuntime(t, 2)
	p := r.LogPath("n")
	appendFile(t, p+".2", "oldest\n")
	appendFile(t, p+".1", "older\n")
	appendFile(t, p, "live\n")
	rc, err := r.OpenLogs(context.Background(), "n", false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "oldest\nolder\nlive\n" {
		t.Errorf("read %q, %v", b, err)
	}
	rc.Close()

	// Close ends a follower blocked in Read.
	f, err := r.OpenLogs(context.Background(), "n", true)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(io.LimitReader(f, int64(len(b))))
	done := make(chan error, 1)
	go func() {
		_, err := f.Read(make([]byte, 10))
		done <- err
	}()
	f.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read did not return after Close")
	}
}

func TestFollowPollsOnTheClock(t *testing.T) {
	r := logRuntime(t, 1)
	fake := clock.NewFake()
	r.cfg.Clock = fake
	p := r.LogPath("c")
	appendFile(t, p, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := r.OpenLogs(ctx, "c", true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := rc.Read(b)
		got <- string(b[:n])
	}()
	// The follower found nothing and waits one poll on the clock; what is
	// written meanwhile shows only once the clock moves.
	if err := fake.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("follower never waited on the clock: %v", err)
	}
	appendFile(t, p, "late\n")
	select {
	case s := <-got:
		t.Fatalf("read %q before the clock moved", s)
	default:
	}
	fake.Advance(r.cfg.LogPollInterval)
	select {
	case s := <-got:
		if s != "late\n" {
			t.Errorf("read %q, want %q", s, "late\n")
		}
	case <-ctx.Done():
		t.Fatal("no read after the clock moved a poll interval")
	}
}
