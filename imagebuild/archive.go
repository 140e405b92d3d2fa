package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// LoadArchive reads an image from a tarball: an OCI image layout packed
// with tar (`docker buildx build --output type=oci`, `skopeo copy
// oci-archive:`), or a `docker save` tarball. An OCI layout keeps its
// digests; a docker save tarball has none to keep, and its layers are
// compressed on the way out.
//
// The archive must hold one image, or an index with one image for
// linux/GOARCH of this machine (attestation manifests are skipped).
// Layers are read from the file when they are pushed, so it must stay in
// place until then.
func LoadArchive(file string) (v1.Image, error) {
	names, small, err := scanTar(file, "oci-layout", "index.json", "manifest.json")
	if err != nil {
		return nil, fmt.Errorf("load archive %s: %w", file, err)
	}
	var img v1.Image
	switch {
	case names["oci-layout"] && names["index.json"]:
		if img, err = loadOCI(file, small["index.json"]); err != nil {
			return nil, fmt.Errorf("load OCI archive %s: %w", file, err)
		}
	case names["manifest.json"]:
		if img, err = tarball.ImageFromPath(file, nil); err != nil {
			return nil, fmt.Errorf("load docker archive %s: %w", file, err)
		}
	default:
		return nil, fmt.Errorf("load archive %s: neither an OCI layout (no oci-layout and index.json) nor a docker save tarball (no manifest.json)", file)
	}
	if err := checkPlatform(img); err != nil {
		return nil, fmt.Errorf("load archive %s: %w", file, err)
	}
	return img, nil
}

// checkPlatform refuses an image its config says is for another platform
// than this machine's, linux/GOARCH: its programs could not run on the
// nodes. (A 32-bit one, linux/386 on amd64, would have every system call
// refused: replicas' seccomp profile admits the native ABI alone.) An
// image that names no platform passes.
func checkPlatform(img v1.Image) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	if (cf.OS == "" || cf.OS == "linux") && (cf.Architecture == "" || cf.Architecture == runtime.GOARCH) {
		return nil
	}
	return fmt.Errorf("the image is for %s/%s; nodes here run linux/%s images", cf.OS, cf.Architecture, runtime.GOARCH)
}

// cleanName is a tar entry's name without "./" or a leading slash.
func cleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// scanTar lists the regular files of a tarball and returns the contents
// of the ones named in want (small files: at most 4 MiB are read).
func scanTar(file string, want ...string) (map[string]bool, map[string][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	names, contents := map[string]bool{}, map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, contents, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("not a readable tarball: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		n := cleanName(h.Name)
		names[n] = true
		for _, w := range want {
			if n == w {
				if contents[n], err = io.ReadAll(io.LimitReader(tr, 4<<20)); err != nil {
					return nil, nil, err
				}
			}
		}
	}
}

// openEntry opens one file of a tarball; the reader reads from the file.
func openEntry(file, name string) (io.ReadCloser, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			f.Close()
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s is not in the archive", name)
			}
			return nil, err
		}
		if h.Typeflag == tar.TypeReg && cleanName(h.Name) == name {
			return struct {
				io.Reader
				io.Closer
			}{tr, f}, nil
		}
	}
}

// ociTar is an OCI image layout inside a tarball.
type ociTar struct{ file string }

func (o ociTar) blob(d v1.Hash) (io.ReadCloser, error) {
	return openEntry(o.file, path.Join("blobs", d.Algorithm, d.Hex))
}

func (o ociTar) readBlob(d v1.Hash) ([]byte, error) {
	rc, err := o.blob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// loadOCI picks the image of an OCI layout's index.
func loadOCI(file string, index []byte) (v1.Image, error) {
	o := ociTar{file: file}
	desc, err := o.pick(index, 0)
	if err != nil {
		return nil, err
	}
	raw, err := o.readBlob(desc.Digest)
	if err != nil {
		return nil, err
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(raw)); got != desc.Digest {
		return nil, fmt.Errorf("manifest %s has digest %s: the archive is corrupt", desc.Digest, got)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	return partial.CompressedToImage(&ociImage{o: o, raw: raw, mediaType: desc.MediaType, m: m})
}

// pick finds the one image an index offers, descending into nested
// indexes; with several, the one for linux/GOARCH.
func (o ociTar) pick(index []byte, depth int) (v1.Descriptor, error) {
	if depth > 4 {
		return v1.Descriptor{}, errors.New("indexes nested too deep")
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(index))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("index: %w", err)
	}
	var images []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			b, err := o.readBlob(d.Digest)
			if err != nil {
				return v1.Descriptor{}, err
			}
			c, err := o.pick(b, depth+1)
			if err != nil {
				return v1.Descriptor{}, err
			}
			images = append(images, c)
		case d.MediaType.IsImage():
			if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
				(d.Platform != nil && d.Platform.OS == "unknown") {
				continue
			}
			images = append(images, d)
		}
	}
	if len(images) == 1 {
		return images[0], nil
	}
	want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	var found []v1.Descriptor
	for _, d := range images {
		if d.Platform != nil && d.Platform.Satisfies(want) {
			found = append(found, d)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return v1.Descriptor{}, fmt.Errorf("the archive holds %d images and %d for %s/%s; want exactly one",
		len(images), len(found), want.OS, want.Architecture)
}

// ociImage is the partial.CompressedImageCore of an image in an ociTar.
type ociImage struct {
	o         ociTar
	raw       []byte
	mediaType types.MediaType
	m         *v1.Manifest
}

var _ partial.CompressedImageCore = (*ociImage)(nil)

func (i *ociImage) RawManifest() ([]byte, error) { return i.raw, nil }

func (i *ociImage) MediaType() (types.MediaType, error) {
	if i.m.MediaType != "" {
		return i.m.MediaType, nil
	}
	return i.mediaType, nil
}

func (i *ociImage) RawConfigFile() ([]byte, error) { return i.o.readBlob(i.m.Config.Digest) }

func (i *ociImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range append([]v1.Descriptor{i.m.Config}, i.m.Layers...) {
		if d.Digest == h {
			return &ociBlob{o: i.o, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("layer %s is not in manifest", h)
}

// ociBlob is a layer read from the tarball as it is.
type ociBlob struct {
	o    ociTar
	desc v1.Descriptor
}

func (b *ociBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *ociBlob) Compressed() (io.ReadCloser, error)  { return b.o.blob(b.desc.Digest) }
func (b *ociBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *ociBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
