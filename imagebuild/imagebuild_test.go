package imagebuild_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/registry/registrytest"
	"github.com/surgeplatform/surge/imagebuild"
)

const helloDir = "../examples/hello"

func helloOptions(t *testing.T) imagebuild.Options {
	t.Helper()
	certs := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(certs, []byte("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := imagebuild.DefaultOptions(helloDir)
	o.CACerts = certs
	return o
}

var hello struct {
	once sync.Once
	img  v1.Image
	err  error
}

// buildHello builds examples/hello once for the tests that only read it.
func buildHello(t *testing.T) v1.Image {
	t.Helper()
	hello.once.Do(func() {
		hello.img, hello.err = imagebuild.Build(context.Background(), imagebuild.DefaultOptions(helloDir))
	})
	if hello.err != nil {
		t.Fatalf("build %s: %v", helloDir, hello.err)
	}
	return hello.img
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBuildIsReproducible(t *testing.T) {
	o := helloOptions(t)
	a, err := imagebuild.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// The same source reached by another path builds the same image.
	abs := o
	if abs.Dir, err = filepath.Abs(o.Dir); err != nil {
		t.Fatal(err)
	}
	b, err := imagebuild.Build(context.Background(), abs)
	if err != nil {
		t.Fatal(err)
	}
	if da, db := digest(t, a), digest(t, b); da != db {
		t.Errorf("two builds of the same source: %s and %s", da, db)
	}
	if err := validate.Image(a); err != nil {
		t.Error(err)
	}

	o.Created = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	c, err := imagebuild.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, c) == digest(t, a) {
		t.Error("a different Created time gave the same digest")
	}
}

func TestBuiltImage(t *testing.T) {
	o := helloOptions(t)
	img, err := imagebuild.Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(0, 0).UTC()
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !cf.Created.Time.Equal(epoch) {
		t.Errorf("created %s, want the epoch", cf.Created)
	}
	want := v1.Config{User: "65532:65532", Entrypoint: []string{"/function"}, WorkingDir: "/"}
	if diff := cmp.Diff(want, cf.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	mt, _ := img.MediaType()
	if mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type %s, want an OCI manifest", mt)
	}

	// The whole filesystem: no shell, nothing writable by the user but /tmp.
	type file struct {
		Mode     int64
		UID, GID int
		Dir      bool
	}
	got := map[string]file{}
	var bin []byte
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %s, want the epoch", h.Name, h.ModTime)
		}
		got[h.Name] = file{Mode: h.Mode, UID: h.Uid, GID: h.Gid, Dir: h.Typeflag == tar.TypeDir}
		if h.Name == "function" {
			bin, _ = io.ReadAll(tr)
		}
	}
	wantFS := map[string]file{
		"etc":                               {Mode: 0o755, Dir: true},
		"etc/group":                         {Mode: 0o644},
		"etc/passwd":                        {Mode: 0o644},
		"etc/ssl":                           {Mode: 0o755, Dir: true},
		"etc/ssl/certs":                     {Mode: 0o755, Dir: true},
		"etc/ssl/certs/ca-certificates.crt": {Mode: 0o644},
		"function":                          {Mode: 0o755},
		"tmp":                               {Mode: 0o1777, Dir: true},
	}
	if diff := cmp.Diff(wantFS, got); diff != "" {
		t.Errorf("image filesystem (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(string(bin), "\x7fELF") {
		t.Error("/function is not an ELF binary")
	}
}

func TestBuildWithoutCACerts(t *testing.T) {
	o := helloOptions(t)
	o.CACerts = filepath.Join(t.TempDir(), "missing.crt")
	img, err := imagebuild.Build(context.Background(), o)
	if err != nil {
		t.Fatalf("a missing CA bundle should be skipped: %v", err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if strings.HasPrefix(h.Name, "etc/ssl") {
			t.Errorf("image has %s without a CA bundle", h.Name)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	lib := t.TempDir()
	write := func(dir, name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(lib, "go.mod", "module example.com/lib\n\ngo 1.22\n")
	write(lib, "lib.go", "package lib\n")
	broken := t.TempDir()
	write(broken, "go.mod", "module example.com/broken\n\ngo 1.22\n")
	write(broken, "main.go", "package main\n\nfunc main() { undefinedThing() }\n")

	for _, tc := range []struct {
		name string
		o    imagebuild.Options
		want []string
	}{
		{"not main", imagebuild.Options{Dir: lib}, []string{"not a main package"}},
		{"compile error", imagebuild.Options{Dir: broken}, []string{"go build failed", "undefinedThing"}},
		{"bad options", imagebuild.Options{Dir: filepath.Join(lib, "nope"), Arch: "AMD 64"}, []string{"source directory", `arch "AMD 64"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := imagebuild.Build(context.Background(), tc.o)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSourceDateEpoch(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	if got, err := imagebuild.SourceDateEpoch(env("")); err != nil || !got.IsZero() {
		t.Errorf("unset: %v, %v", got, err)
	}
	if got, err := imagebuild.SourceDateEpoch(env("1700000000")); err != nil || !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("1700000000: %v, %v", got, err)
	}
	if _, err := imagebuild.SourceDateEpoch(env("yesterday")); err == nil {
		t.Error("yesterday: no error")
	}
}

// tarDir packs a directory into a tarball, as `tar -C dir -cf file .` does.
func tarDir(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = "./" + filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func randomImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestLoadArchive(t *testing.T) {
	here := randomImage(t, runtime.GOARCH)
	other := randomImage(t, "s390x")
	if runtime.GOARCH == "s390x" {
		other = randomImage(t, "riscv64")
	}
	dir := t.TempDir()

	ociTar := func(name string, adds ...mutate.IndexAddendum) string {
		lp, err := layout.Write(filepath.Join(dir, name), empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range adds {
			if err := lp.AppendImage(a.Add.(v1.Image), layout.WithPlatform(*a.Descriptor.Platform)); err != nil {
				t.Fatal(err)
			}
		}
		file := filepath.Join(dir, name+".tar")
		tarDir(t, filepath.Join(dir, name), file)
		return file
	}
	platform := func(img v1.Image, arch string) mutate.IndexAddendum {
		return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}}
	}
	dockerTar := filepath.Join(dir, "docker.tar")
	tag, _ := name.NewTag("example.com/hello:v1")
	if err := tarball.WriteToFile(dockerTar, tag, here); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		file       string
		sameDigest bool // an OCI layout keeps the manifest as it was
	}{
		{"docker save", dockerTar, false},
		{"OCI layout, one image", ociTar("one", platform(here, runtime.GOARCH)), true},
		{"OCI layout, two platforms", ociTar("two", platform(other, "s390x"), platform(here, runtime.GOARCH)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := imagebuild.LoadArchive(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(img); err != nil {
				t.Fatal(err)
			}
			gotCfg, _ := img.ConfigName()
			wantCfg, _ := here.ConfigName()
			if gotCfg != wantCfg {
				t.Errorf("config %s, want %s", gotCfg, wantCfg)
			}
			if tc.sameDigest && digest(t, img) != digest(t, here) {
				t.Errorf("digest %s, want %s", digest(t, img), digest(t, here))
			}
		})
	}

	if _, err := imagebuild.LoadArchive(ociTar("ambiguous", platform(here, "s390x"), platform(other, "s390x"))); err == nil ||
		!strings.Contains(err.Error(), "want exactly one") {
		t.Errorf("two images for one platform: %v", err)
	}
	// One image, but for another platform: refused, naming it.
	otherTar := filepath.Join(dir, "other.tar")
	if err := tarball.WriteToFile(otherTar, tag, other); err != nil {
		t.Fatal(err)
	}
	otherArch, _ := other.ConfigFile()
	for _, file := range []string{otherTar, ociTar("other", platform(other, otherArch.Architecture))} {
		if _, err := imagebuild.LoadArchive(file); err == nil || !strings.Contains(err.Error(), "for linux/"+otherArch.Architecture) {
			t.Errorf("an image for linux/%s alone: %v, want it refused, naming the platform", otherArch.Architecture, err)
		}
	}
	notTar := filepath.Join(dir, "hello.go")
	os.WriteFile(notTar, []byte("package main\n"), 0o644)
	if _, err := imagebuild.LoadArchive(notTar); err == nil {
		t.Error("LoadArchive of a Go file succeeded")
	}
}

func TestPush(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	opts := imagebuild.PushOptions{Token: s.Token, Transport: s.Client().Transport}

	built := buildHello(t)
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	loadedFrom := randomImage(t, runtime.GOARCH)
	if err := lp.AppendImage(loadedFrom); err != nil {
		t.Fatal(err)
	}
	tarDir(t, filepath.Join(dir, "oci"), filepath.Join(dir, "oci.tar"))
	loaded, err := imagebuild.LoadArchive(filepath.Join(dir, "oci.tar"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		img  v1.Image
		ref  string
	}{
		{"built", built, "default/hello:v1"},
		{"loaded", loaded, "default/other:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := imagebuild.Push(context.Background(), tc.img, s.Host+"/"+tc.ref, opts)
			if err != nil {
				t.Fatal(err)
			}
			want := digest(t, tc.img)
			repo, _, _ := strings.Cut(tc.ref, ":")
			if wantRef := s.Host + "/" + repo + "@" + want.String(); got != wantRef {
				t.Errorf("Push = %q, want %q", got, wantRef)
			}
			r, err := name.ParseReference(got)
			if err != nil {
				t.Fatal(err)
			}
			pulled, err := remote.Image(r, remote.WithAuth(&authn.Bearer{Token: s.Token}), remote.WithTransport(s.Client().Transport))
			if err != nil {
				t.Fatal(err)
			}
			if d := digest(t, pulled); d != want {
				t.Errorf("pulled %s, pushed %s", d, want)
			}
			if err := validate.Image(pulled); err != nil {
				t.Error(err)
			}
		})
	}

	if _, err := imagebuild.Push(context.Background(), built, s.Host+"/default/hello:v2", imagebuild.PushOptions{Transport: s.Client().Transport}); err == nil {
		t.Error("push without a token succeeded")
	}
}

// TestPushTooLarge: a registry that refuses a layer as too large gives a
// TooLargeError with its message, the limit in it.
func TestPushTooLarge(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{Config: registry.Config{MaxBlobSize: 1024}})
	opts := imagebuild.PushOptions{Token: s.Token, Transport: s.Client().Transport}
	_, err := imagebuild.Push(context.Background(), randomImage(t, runtime.GOARCH), s.Host+"/default/big:v1", opts)
	var tl *imagebuild.TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(tl.Message, "limit of 1024 bytes") {
		t.Errorf("push of an image over the limit: %v, want a TooLargeError naming the limit", err)
	}
}
