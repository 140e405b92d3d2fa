// Package imagebuild makes the OCI images Surge runs: it compiles a Go main
// package into a one-binary image (Build), reads an image someone else
// built from a tarball (LoadArchive), and pushes either to the control
// plane's registry (Push). It is what `surge build` and `surge deploy DIR`
// use.
//
// Build is reproducible: the same source, Go toolchain and options give the
// same image digest, on any machine. The binary is built with -trimpath,
// without build ID or VCS stamp, and every timestamp in the image is
// Options.Created.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where things are in a built image.
const (
	// Entrypoint is the binary, and the image's entrypoint.
	Entrypoint = "/function"
	// CACertsPath is where the CA bundle goes: the first place Go's
	// crypto/x509 looks on Linux, so TLS clients in the function just work.
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	// User is the uid:gid the function runs as: distroless' "nonroot",
	// which owns no file in the image. The group is explicit because
	// runtimes fall back to gid 0 for a bare uid missing from /etc/passwd.
	User = "65532:65532"
)

// DefaultCACerts is the build machine's CA bundle on Debian, Ubuntu,
// Alpine and Arch.
const DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

// Options configure Build. Make them with DefaultOptions.
type Options struct {
	// Dir is the directory of the main package to build. Required.
	Dir string
	// Arch is the GOARCH of the nodes that will run the image. The default
	// is this machine's, which is right for `surge up` on a laptop.
	Arch string
	// CACerts is a PEM bundle copied into the image at CACertsPath. Empty
	// means none; a missing file is skipped, as a build machine without CA
	// certificates should still build functions that make no TLS calls.
	CACerts string
	// Created is every timestamp in the image. The zero value means the
	// Unix epoch; pass SourceDateEpoch's result to honour SOURCE_DATE_EPOCH.
	Created time.Time
	// Go is the go command; the default, "go", is looked up in PATH.
	Go string
	// Output receives the compiler's output as it runs. Nil keeps it, to
	// quote it in the error if the build fails.
	Output io.Writer
}

// DefaultOptions returns the options `surge build DIR` uses.
func DefaultOptions(dir string) Options {
	return Options{Dir: dir, Arch: runtime.GOARCH, CACerts: DefaultCACerts, Go: "go"}
}

var archRE = regexp.MustCompile(`^[a-z0-9]+$`)

func (o Options) withDefaults() Options {
	d := DefaultOptions(o.Dir)
	if o.Arch == "" {
		o.Arch = d.Arch
	}
	if o.Go == "" {
		o.Go = d.Go
	}
	return o
}

// Validate reports every bad field at once.
func (o Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("build: no source directory given"))
	} else if fi, err := os.Stat(o.Dir); err != nil {
		errs = append(errs, fmt.Errorf("build: source directory %s: %w", o.Dir, err))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("build: source %s is not a directory", o.Dir))
	}
	if !archRE.MatchString(o.Arch) {
		errs = append(errs, fmt.Errorf("build: arch %q: want a GOARCH such as amd64 or arm64", o.Arch))
	}
	return errors.Join(errs...)
}

// SourceDateEpoch reads SOURCE_DATE_EPOCH
// (https://reproducible-builds.org/specs/source-date-epoch/) through
// getenv: the zero time if it is unset, an error if it is not a number of
// seconds.
func SourceDateEpoch(getenv func(string) string) (time.Time, error) {
	s := getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// Build compiles the main package in o.Dir for linux/o.Arch and returns an
// image of it: one layer on an empty base holding the binary at
// Entrypoint, the CA bundle, /etc/passwd and /etc/group naming the nonroot
// user, and an empty /tmp; no shell, no package manager. The image runs as
// User. The binary is static (CGO_ENABLED=0): a function that needs cgo
// cannot be built this way.
func Build(ctx context.Context, o Options) (v1.Image, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "surge-build-")
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", o.Dir, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "function")
	if err := compile(ctx, o, out); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", o.Dir, err)
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		// go build -o writes an archive for a non-main package.
		return nil, fmt.Errorf("build %s: not a main package (want `package main` with a func main)", o.Dir)
	}
	var certs []byte
	if o.CACerts != "" {
		certs, err = os.ReadFile(o.CACerts)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("build %s: CA certificates: %w", o.Dir, err)
		}
	}
	return assemble(bin, certs, o.Arch, o.Created)
}

// compile runs go build. -buildvcs=false keeps the VCS stamp (commit,
// dirty flag) out of the binary, so a commit that changes no source of the
// function does not change its image; -buildid= and -trimpath remove the
// other per-machine bytes.
func compile(ctx context.Context, o Options, out string) error {
	cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	var log bytes.Buffer
	w := o.Output
	if w == nil {
		w = &log
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(log.String()); msg != "" {
			return fmt.Errorf("build %s: go build failed: %w\n%s", o.Dir, err, msg)
		}
		return fmt.Errorf("build %s: go build failed: %w", o.Dir, err)
	}
	return nil
}

// assemble makes the image; it is pure, which is what makes Build
// reproducible once the binary is.
func assemble(bin, certs []byte, arch string, created time.Time) (v1.Image, error) {
	created = created.UTC().Truncate(time.Second)
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	layerTar, err := rootfs(bin, certs, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     plainLayer{layer},
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "surge build", Comment: "function binary"},
	})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = arch, "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		User:       User,
		Entrypoint: []string{Entrypoint},
		WorkingDir: "/",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// plainLayer hides the tarball layer's Descriptor method, whose empty (not
// nil) annotations map would make the image's Manifest() differ from its
// RawManifest() and fail validate.Image.
type plainLayer struct{ v1.Layer }

// rootfs writes the layer's tar: root-owned, fixed times, fixed order.
func rootfs(bin, certs []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name string
		mode int64
		data []byte // nil for a directory
	}
	entries := []entry{
		{"etc/", 0o755, nil},
		{"etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
	}
	if len(certs) > 0 {
		entries = append(entries,
			entry{"etc/ssl/", 0o755, nil},
			entry{"etc/ssl/certs/", 0o755, nil},
			entry{strings.TrimPrefix(CACertsPath, "/"), 0o644, certs})
	}
	entries = append(entries,
		entry{strings.TrimPrefix(Entrypoint, "/"), 0o755, bin},
		entry{"tmp/", 0o1777, nil})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Format: tar.FormatPAX}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	return buf.Bytes(), nil
}
