package containers

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/nodeagent/network"
)

// The integration tests share one environment, made on first use: a
// containerd (the system one when it answers, else a private one started
// by the runtime under test; SURGE_TEST_PRIVATE_CONTAINERD=1 forces the
// latter), a namespace of their own, a bridge and subnet of their own, and
// a TLS registry that wants a bearer token, holding images of
// testdata/replica.
const (
	testSubnet  = "10.244.252.0/24"
	testBridge  = "surgetr0"
	testNetName = "surge-test-rt"
	testToken   = "test-token-123"
)

type testEnv struct {
	err      error // why the environment could not be made
	stateDir string
	base     *Runtime // owns the private containerd, if one was started
	cfg      Config   // for more runtimes on the same containerd and state

	registry  *httptest.Server // TLS, bearer token
	pushSrv   *httptest.Server // plain, no auth, same storage: for pushing
	regHits   atomic.Int64     // requests to registry
	badAuth   atomic.Int64     // requests to registry without the token
	imageRef  string           // user "" (runs as 65532)
	namedRef  string           // user "app" from /etc/passwd (1234:1234)
	registryH string           // host:port of registry
}

var (
	envOnce sync.Once
	env     testEnv
)

// TestMain tears the shared environment down after the tests, then fails
// them if a goroutine they started outlives it: a task's wait, the warm
// pool, a log follower, a containerd connection.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withTeardown{m})
}

// withTeardown runs the tests, then tears the shared environment down,
// before goleak looks for what is left.
type withTeardown struct{ m *testing.M }

func (w withTeardown) Run() int {
	code := w.m.Run()
	if env.base != nil {
		env.teardown()
	}
	return code
}

// missingDeps lists what the integration tests need and this machine
// lacks.
func missingDeps() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc")
	}
	if _, ok := probe(context.Background(), DefaultConfig().ContainerdAddress); !ok {
		if _, err := exec.LookPath("containerd"); err != nil {
			missing = append(missing, "containerd (no socket at "+DefaultConfig().ContainerdAddress+" and no binary)")
		}
	}
	for _, p := range network.RequiredPlugins {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			missing = append(missing, "/usr/lib/cni/"+p)
		}
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		missing = append(missing, "iptables")
	}
	return missing
}

// needEnv returns the shared environment, skipping the test (failing it
// under CI=true) when a dependency is missing, and failing it when the
// environment could not be made.
func needEnv(t *testing.T) *testEnv {
	t.Helper()
	if missing := missingDeps(); len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and missing %s", strings.Join(missing, ", "))
		}
		t.Skipf("needs %s", strings.Join(missing, ", "))
	}
	envOnce.Do(env.setup)
	if env.err != nil {
		t.Fatalf("test environment: %v", env.err)
	}
	return &env
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		level := slog.LevelInfo
		if os.Getenv("SURGE_TEST_DEBUG") == "1" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.DiscardHandler)
}

func (e *testEnv) setup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Short: the private containerd's socket lives under it.
	dir, err := os.MkdirTemp("", "surgert")
	if err != nil {
		e.err = err
		return
	}
	e.stateDir = dir

	bin, err := buildReplica(ctx, dir)
	if err != nil {
		e.err = err
		return
	}
	if err := e.startRegistry(); err != nil {
		e.err = err
		return
	}
	for _, im := range []struct {
		ref  *string
		repo string
		user string
	}{{&e.imageRef, "surge/replica:v1", ""}, {&e.namedRef, "surge/replica-named:v1", "app"}} {
		if *im.ref, err = e.push(bin, im.repo, im.user); err != nil {
			e.err = err
			return
		}
	}

	cfg := DefaultConfig()
	if os.Getenv("SURGE_TEST_PRIVATE_CONTAINERD") == "1" {
		// As on CI, where no containerd runs: the runtime starts its own.
		cfg.ContainerdAddress = filepath.Join(dir, "none.sock")
	}
	cfg.StateDir = filepath.Join(dir, "s")
	cfg.Namespace = fmt.Sprintf("surgetest-%d", os.Getpid())
	cfg.RegistryHost = e.registryH
	cfg.RegistryToken = testToken
	cfg.RegistryCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.registry.Certificate().Raw})
	cfg.Network.Subnet = testSubnet
	cfg.Network.BridgeName = testBridge
	cfg.Network.NetworkName = testNetName
	cfg.Network.Mode = network.ModeCNI
	cfg.Log = testLogger()
	e.base, err = New(ctx, cfg)
	if err != nil {
		e.err = err
		return
	}
	// Every other runtime of the tests uses the containerd the base one
	// found or started, and never starts one of its own.
	cfg.ContainerdAddress = e.base.ContainerdAddress()
	cfg.PrivateContainerd = false
	e.cfg = cfg
}

func (e *testEnv) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := e.base
	if _, err := r.RemoveOrphans(ctx, func(string) bool { return false }); err != nil {
		fmt.Fprintln(os.Stderr, "teardown: remove replicas:", err)
	}
	nctx := namespaces.WithNamespace(ctx, r.cfg.Namespace)
	if imgs, err := r.client.ImageService().List(nctx); err == nil {
		for _, im := range imgs {
			r.client.ImageService().Delete(nctx, im.Name)
		}
	}
	// Deleting a lease synchronously runs the garbage collector, which
	// removes the images' content and snapshots; only then is the
	// namespace empty enough to delete.
	if l, err := r.client.LeasesService().Create(nctx, leases.WithRandomID()); err == nil {
		r.client.LeasesService().Delete(nctx, l, leases.SynchronousDelete)
	}
	if err := r.client.NamespaceService().Delete(nctx, r.cfg.Namespace); err != nil {
		fmt.Fprintln(os.Stderr, "teardown: delete namespace:", err)
	}
	if err := r.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
	}
	if l, err := netlink.LinkByName(testBridge); err == nil {
		netlink.LinkDel(l)
	}
	e.registry.Close()
	e.pushSrv.Close()
	if err := os.RemoveAll(e.stateDir); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
	}
}

// buildReplica builds testdata/replica as a static binary.
func buildReplica(ctx context.Context, dir string) (string, error) {
	gobin := filepath.Join(goruntime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	}
	out := filepath.Join(dir, "replica")
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-o", out, "./testdata/replica")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test replica: %v\n%s", err, b)
	}
	return out, nil
}

func (e *testEnv) startRegistry() error {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	e.registry = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.regHits.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			e.badAuth.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="surge"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	e.registry.StartTLS()
	e.registryH = e.registry.Listener.Addr().String()
	e.pushSrv = httptest.NewServer(reg)
	return nil
}

// push makes a one-layer image of the replica binary and pushes it through
// the unauthenticated server; it returns the reference to pull through the
// TLS one.
func (e *testEnv) push(bin, repo, user string) (string, error) {
	layer, err := replicaLayer(bin)
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config = v1.Config{
		Entrypoint: []string{"/app"},
		User:       user,
		Env:        []string{"PATH=/", "IMAGE_ENV=from-image"},
		WorkingDir: "/",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	pushRef, err := name.ParseReference(strings.TrimPrefix(e.pushSrv.URL, "http://")+"/"+repo, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(pushRef, img); err != nil {
		return "", fmt.Errorf("push test image: %w", err)
	}
	return e.registryH + "/" + repo, nil
}

// replicaLayer is the image's one layer: /app, a world-writable /data (to
// tell a read-only rootfs from a permission error), /tmp, /etc/passwd and
// /etc/group with the user "app".
func replicaLayer(bin string) (v1.Layer, error) {
	app, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Unix(1700000000, 0)
	dirs := []struct {
		name string
		mode int64
	}{{"data/", 0o777}, {"tmp/", 0o1777}, {"etc/", 0o755}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"app", 0o755, app},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\napp:x:1234:1234:app:/:/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\napp:x:1234:\n")},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// newRuntime makes another Runtime on the shared containerd and state,
// changed by mutate; it is closed with the test.
func (e *testEnv) newRuntime(t *testing.T, mutate func(*Config)) *Runtime {
	t.Helper()
	cfg := e.cfg
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(testContext(t, time.Minute), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
