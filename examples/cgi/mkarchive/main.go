// Command mkarchive assembles the cgi example's image, a function that is
// not Go, from Debian files: Debian's static busybox (package
// busybox-static) serving the example's www folder with its httpd, which
// runs the shell CGI script in www/cgi-bin. It writes the image as an OCI
// layout tarball, which `surge deploy NAME --archive FILE` pushes and
// deploys:
//
//	go run ./examples/cgi/mkarchive -o /tmp/cgi.tar && surge deploy cgi --archive /tmp/cgi.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	busybox := flag.String("busybox", "/bin/busybox", "a static busybox binary (Debian: apt-get install busybox-static)")
	www := flag.String("www", "examples/cgi/www", "the folder httpd serves; cgi-bin/ holds the scripts")
	out := flag.String("o", "cgi.tar", "the OCI layout tarball to write")
	flag.Parse()
	img, err := image(*busybox, *www)
	if err != nil {
		log.Fatalf("mkarchive: %v", err)
	}
	if err := writeArchive(img, *out); err != nil {
		log.Fatalf("mkarchive: %v", err)
	}
	fmt.Println(*out)
}

// image is busybox and www on an empty base: httpd in the foreground on
// $PORT, as uid 65532, with /bin/sh for the CGI scripts.
func image(busybox, www string) (v1.Image, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("%w (install Debian's busybox-static, or pass -busybox)", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	add := func(h *tar.Header, data []byte) error {
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
	} {
		if err := add(h, nil); err != nil {
			return nil, err
		}
	}
	if err := add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin); err != nil {
		return nil, err
	}
	err = filepath.WalkDir(www, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(www, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join("www", rel))
		if d.IsDir() {
			return add(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mode := int64(0o644)
		if filepath.Base(filepath.Dir(p)) == "cgi-bin" {
			mode = 0o755
		}
		return add(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(b))}, b)
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", www, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{
		Entrypoint: []string{"/bin/sh", "-c", `exec /bin/busybox httpd -f -v -p "${PORT:-8080}" -h /www`},
		Env:        []string{"PATH=/bin"},
		User:       "65532:65532",
		WorkingDir: "/",
	}
	return mutate.ConfigFile(img, cf)
}

// writeArchive writes img as an OCI image layout, packed with tar.
func writeArchive(img v1.Image, out string) error {
	dir, err := os.MkdirTemp("", "mkarchive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
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
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
