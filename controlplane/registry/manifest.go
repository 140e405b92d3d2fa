package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// manifest is what the registry needs of an image manifest or an index:
// what it references, so that a put can check it and GC can follow it.
type manifest struct {
	mediaType string
	// blobs are an image manifest's config and layers.
	blobs []v1.Hash
	// children are an index's manifests.
	children []v1.Hash
}

// parseManifest reads an OCI or Docker schema 2 image manifest or index.
// contentType is the Content-Type it was put with; when empty (as when GC
// reads a stored manifest), the mediaType field, then the shape, decides.
func parseManifest(body []byte, contentType string) (manifest, error) {
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var raw struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        *descriptor  `json:"config"`
		Layers        []descriptor `json:"layers"`
		Manifests     []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return manifest{}, fmt.Errorf("manifest is not JSON: %v", err)
	}
	if raw.SchemaVersion != 2 {
		return manifest{}, fmt.Errorf("manifest has schemaVersion %d; only 2 is supported", raw.SchemaVersion)
	}
	mt := raw.MediaType
	if ct, _, err := mime.ParseMediaType(contentType); err == nil && ct != "" {
		mt = ct
	}
	if mt == "" {
		mt = string(types.OCIManifestSchema1)
		if raw.Manifests != nil {
			mt = string(types.OCIImageIndex)
		}
	}
	m := manifest{mediaType: mt}
	digest := func(field, s string) (v1.Hash, error) {
		d, ok := parseDigest(s)
		if !ok {
			return d, fmt.Errorf("%s: %q is not a sha256 digest", field, s)
		}
		return d, nil
	}
	switch types.MediaType(mt) {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		if raw.Config == nil {
			return manifest{}, fmt.Errorf("image manifest has no config")
		}
		d, err := digest("config.digest", raw.Config.Digest)
		if err != nil {
			return manifest{}, err
		}
		m.blobs = append(m.blobs, d)
		for i, l := range raw.Layers {
			if foreign(l.MediaType) {
				continue // kept elsewhere, by definition
			}
			d, err := digest(fmt.Sprintf("layers[%d].digest", i), l.Digest)
			if err != nil {
				return manifest{}, err
			}
			m.blobs = append(m.blobs, d)
		}
	case types.OCIImageIndex, types.DockerManifestList:
		for i, c := range raw.Manifests {
			d, err := digest(fmt.Sprintf("manifests[%d].digest", i), c.Digest)
			if err != nil {
				return manifest{}, err
			}
			m.children = append(m.children, d)
		}
	default:
		return manifest{}, fmt.Errorf("unsupported manifest media type %q: want an OCI or Docker schema 2 image manifest or index", mt)
	}
	return m, nil
}

// foreign reports whether a layer is one registries do not hold (Windows
// base layers).
func foreign(mediaType string) bool {
	return strings.Contains(mediaType, "foreign") || strings.Contains(mediaType, "nondistributable")
}

func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request, repo, ref string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxManifestSize))
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "manifest is larger than %d bytes", mbe.Limit)
	} else if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	m, err := parseManifest(body, req.Header.Get("Content-Type"))
	if err != nil {
		return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
	}
	sum := sha256.Sum256(body)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	tag := ""
	if strings.Contains(ref, ":") {
		want, ok := parseDigest(ref)
		if !ok {
			return errDigest(ref)
		}
		if want != d {
			return errorf(http.StatusBadRequest, "DIGEST_INVALID", "manifest has digest %s, not %s", d, want)
		}
	} else if !tagRE.MatchString(ref) {
		return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "invalid tag %q: want up to 128 letters, digits, '_', '.' or '-'", ref)
	} else {
		tag = ref
	}

	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, b := range slices.Concat(m.blobs, m.children) {
		if !exists(r.blobPath(b)) {
			oe := errorf(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "manifest references %s, which is not in the registry; push it first", b)
			oe.Detail = map[string]string{"digest": b.String()}
			return oe
		}
	}
	if p := r.blobPath(d); exists(p) {
		r.touch(p)
	} else if err := r.writeFile(p, body); err != nil {
		return fmt.Errorf("store manifest %s: %w", d, err)
	}
	if err := r.linkManifest(repo, d, m.mediaType); err != nil {
		return err
	}
	if tag != "" {
		if err := r.writeFile(r.tagPath(repo, tag), []byte(d.String())); err != nil {
			return fmt.Errorf("tag %s:%s: %w", repo, tag, err)
		}
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/manifests/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// linkManifest links manifest d into repo, making the repository if it is
// new, within Config.MaxRepositories.
func (r *Registry) linkManifest(repo string, d v1.Hash, mediaType string) error {
	if !r.repoExists(repo) {
		r.newRepo.Lock()
		defer r.newRepo.Unlock()
		if !r.repoExists(repo) {
			repos, err := r.repositories()
			if err != nil {
				return fmt.Errorf("count repositories: %w", err)
			}
			if len(repos) >= r.cfg.MaxRepositories {
				oe := errorf(http.StatusForbidden, "DENIED",
					"the registry holds %d repositories, its limit (MaxRepositories): push to an existing repository, or remove functions whose images are no longer needed (image GC then removes their repositories)",
					len(repos))
				oe.Detail = map[string]any{"limit": "MaxRepositories", "max": r.cfg.MaxRepositories}
				return oe
			}
		}
	}
	if err := r.writeFile(r.manifestLink(repo, d), []byte(mediaType)); err != nil {
		return fmt.Errorf("link manifest %s into %s: %w", d, repo, err)
	}
	return nil
}

// repoExists reports whether a manifest was ever put to repo; its
// directory alone may be the parent of a nested repository's.
func (r *Registry) repoExists(repo string) bool {
	return exists(filepath.Join(r.repoDir(repo), "_manifests"))
}

// ErrUnknown is returned by Resolve for a repository, tag or manifest the
// registry does not hold.
var ErrUnknown = errors.New("registry: unknown image")

// Resolve returns the digest of the manifest that ref (a tag, or a digest)
// names in repo ("default/hello"): what a deploy pins its revision to.
func (r *Registry) Resolve(repo, ref string) (v1.Hash, error) {
	if len(repo) > 255 || !repoRE.MatchString(repo) {
		return v1.Hash{}, fmt.Errorf("%w: invalid repository name %q", ErrUnknown, repo)
	}
	d, err := r.resolve(repo, ref)
	var oe *ociError
	if errors.As(err, &oe) {
		return v1.Hash{}, fmt.Errorf("%w: %s", ErrUnknown, oe.Message)
	}
	if err != nil {
		return v1.Hash{}, err
	}
	if !exists(r.manifestLink(repo, d)) {
		return v1.Hash{}, fmt.Errorf("%w: manifest %s@%s is not in the registry", ErrUnknown, repo, d)
	}
	return d, nil
}

// resolve turns a tag or digest into the digest of a manifest of repo.
func (r *Registry) resolve(repo, ref string) (v1.Hash, error) {
	if !r.repoExists(repo) {
		return v1.Hash{}, errorf(http.StatusNotFound, "NAME_UNKNOWN", "repository %q is not in the registry", repo)
	}
	unknown := errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest %s:%s is not in the registry", repo, ref)
	if strings.Contains(ref, ":") {
		d, ok := parseDigest(ref)
		if !ok {
			return v1.Hash{}, errDigest(ref)
		}
		return d, nil
	}
	if !tagRE.MatchString(ref) {
		return v1.Hash{}, unknown
	}
	b, err := os.ReadFile(r.tagPath(repo, ref))
	if errors.Is(err, fs.ErrNotExist) {
		return v1.Hash{}, unknown
	} else if err != nil {
		return v1.Hash{}, err
	}
	d, ok := parseDigest(string(b))
	if !ok {
		return v1.Hash{}, fmt.Errorf("tag %s:%s holds %q, not a digest", repo, ref, b)
	}
	return d, nil
}

func (r *Registry) getManifest(w http.ResponseWriter, req *http.Request, repo, ref string) error {
	d, err := r.resolve(repo, ref)
	if err != nil {
		return err
	}
	unknown := errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest %s@%s is not in the registry", repo, d)
	mt, err := os.ReadFile(r.manifestLink(repo, d))
	if errors.Is(err, fs.ErrNotExist) {
		return unknown
	} else if err != nil {
		return err
	}
	f, err := os.Open(r.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return unknown
	} else if err != nil {
		return err
	}
	defer f.Close()
	serveContent(w, req, f, string(mt), d)
	return nil
}

func (r *Registry) listTags(w http.ResponseWriter, req *http.Request, repo string) error {
	if !r.repoExists(repo) {
		return errorf(http.StatusNotFound, "NAME_UNKNOWN", "repository %q is not in the registry", repo)
	}
	tags, err := r.tags(repo)
	if err != nil {
		return err
	}
	q := req.URL.Query()
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n >= 0 && n < len(tags) {
		tags = tags[:n]
		if n > 0 {
			w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, repo, n, tags[n-1]))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, tags})
}

// tags lists a repository's tags, sorted.
func (r *Registry) tags(repo string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(r.repoDir(repo), "_tags"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	tags := make([]string, 0, len(ents))
	for _, e := range ents {
		tags = append(tags, e.Name())
	}
	return tags, nil // ReadDir sorts by name
}
