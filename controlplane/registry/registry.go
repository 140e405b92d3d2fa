// Package registry is Surge's built-in OCI registry: the pull and push
// halves of the OCI distribution API
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md),
// served at /v2/ on the API listener. `surge build` pushes here and node
// agents pull from here; nothing of it is kept in etcd.
//
// The Registry is a plain http.Handler and does no authentication: the API
// server mounts it behind the same bearer-token check and role rules as the
// rest of the API (reads for GET and HEAD, writes for the rest).
//
// On disk, under Config.Dir:
//
//	blobs/sha256/HH/HEX                      content, named by its SHA-256
//	repositories/REPO/_manifests/sha256/HEX  a manifest of REPO; holds its media type
//	repositories/REPO/_tags/TAG              holds the digest TAG points at
//	uploads/ID                               a blob upload in progress
//	tmp/                                     files being written
//
// Every file is written to tmp/ or uploads/, fsynced and renamed into place,
// so a crash leaves whole files only. Repository path components never start
// with "_" (the OCI name grammar forbids it), so "_manifests" and "_tags"
// cannot collide with a nested repository.
//
// Blobs are shared by every repository: a token that may read the registry
// may read any blob whose digest it knows, and mounting a blob from another
// repository always succeeds when the blob exists. Surge's roles read every
// namespace anyway; per-repository blob links would buy no isolation.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/surgeplatform/surge/internal/clock"
)

// Config configures a Registry. Make it with DefaultConfig.
type Config struct {
	// Dir holds the registry's files (see the package comment). It is
	// created with mode 0700. Required, absolute.
	Dir string
	// MaxManifestSize bounds a manifest's body, which is read into memory.
	// 4 MiB, like CNCF distribution: real manifests are a few KiB, and the
	// bound stops a client from making the server buffer a huge body.
	MaxManifestSize int64
	// MaxBlobSize bounds one blob (a layer): an upload that grows past it
	// is refused with 413, so that one push cannot fill the server's disk.
	// 4 GiB by default, Docker Hub's order of magnitude; zero means the
	// default.
	MaxBlobSize int64
	// MaxRepositories bounds how many repositories the registry holds: a
	// manifest put to a new repository past it is refused with 403
	// DENIED, so that a pushing client cannot make directories without
	// end. Each function's image is one repository (NAMESPACE/NAME), and
	// GC removes those no function uses any more. 10000 by default; zero
	// means the default.
	MaxRepositories int
	// GCGrace protects blobs, manifests, tags and uploads younger than it
	// from GC: a push in flight (blobs first, manifest last) and an image
	// pushed but not yet deployed survive. Longer keeps garbage longer;
	// zero means the default.
	GCGrace time.Duration
	// Log receives the errors a client is not told about.
	Log *slog.Logger
	// Clock is the clock, for GC's ages and for refreshing a blob's age
	// when a client finds it already present; nil is the wall clock.
	Clock clock.Clock
}

// DefaultConfig returns a configuration with every default filled but Dir.
func DefaultConfig() Config {
	return Config{
		MaxManifestSize: 4 << 20,
		MaxBlobSize:     4 << 30,
		MaxRepositories: 10000,
		GCGrace:         time.Hour,
		Log:             slog.New(slog.DiscardHandler),
		Clock:           clock.Real(),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxManifestSize == 0 {
		c.MaxManifestSize = d.MaxManifestSize
	}
	if c.GCGrace == 0 {
		c.GCGrace = d.GCGrace
	}
	if c.MaxBlobSize == 0 {
		c.MaxBlobSize = d.MaxBlobSize
	}
	if c.MaxRepositories == 0 {
		c.MaxRepositories = d.MaxRepositories
	}
	if c.Log == nil {
		c.Log = d.Log
	}
	c.Clock = clock.Or(c.Clock)
	return c
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("registry Dir %q: want an absolute path", c.Dir))
	}
	if c.MaxManifestSize <= 0 {
		errs = append(errs, fmt.Errorf("registry MaxManifestSize %d: want > 0", c.MaxManifestSize))
	}
	if c.MaxBlobSize < 0 {
		errs = append(errs, fmt.Errorf("registry MaxBlobSize %d: want >= 0", c.MaxBlobSize))
	}
	if c.MaxRepositories < 0 {
		errs = append(errs, fmt.Errorf("registry MaxRepositories %d: want >= 0", c.MaxRepositories))
	}
	if c.GCGrace < 0 {
		errs = append(errs, fmt.Errorf("registry GCGrace %s: want >= 0", c.GCGrace))
	}
	return errors.Join(errs...)
}

// Registry serves the OCI distribution API from a directory. It is safe
// for concurrent use.
type Registry struct {
	cfg Config

	// mu orders the writes that make content reachable (finishing a blob
	// upload, putting a manifest, mounting) against GC: they hold it
	// shared, GC holds it exclusively, so GC never deletes a blob that a
	// manifest being put has just checked for.
	mu sync.RWMutex
	// newRepo is held from counting the repositories to making a new
	// one, so that two pushes cannot both take the last place.
	newRepo sync.Mutex

	// testHookVerified, when set, is called by finishUpload once it has
	// checked the digest of its copy of the upload, with the path of the
	// upload it took (tests write to it there, as a late PATCH would).
	testHookVerified func(taken string)
}

var _ http.Handler = (*Registry)(nil)

// New checks cfg, creates its directories and returns a Registry.
func New(cfg Config) (*Registry, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"blobs/sha256", "repositories", "uploads", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("create registry dir: %w", err)
		}
	}
	return &Registry{cfg: cfg}, nil
}

// ociError is one entry of the distribution API's error body.
type ociError struct {
	status  int
	header  http.Header
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

func (e *ociError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *ociError {
	return &ociError{status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func errDigest(s string) *ociError {
	return errorf(http.StatusBadRequest, "DIGEST_INVALID", "%q is not a digest of the form sha256:<64 hex digits>", s)
}

// ServeHTTP implements http.Handler for paths under /v2/.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	err := r.serve(w, req)
	if err == nil {
		return
	}
	var oe *ociError
	if !errors.As(err, &oe) {
		r.cfg.Log.Error("registry request failed", "method", req.Method, "path", req.URL.Path, "err", err)
		oe = errorf(http.StatusInternalServerError, "UNKNOWN", "internal registry error; the server log has details")
	}
	for k, v := range oe.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(oe.status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []*ociError `json:"errors"`
	}{[]*ociError{oe}})
}

type routeKind int

const (
	routeTags routeKind = iota
	routeManifest
	routeBlob
	routeUploads // .../blobs/uploads/
	routeUpload  // .../blobs/uploads/ID
)

// parseRoute splits the path after /v2/ into repository and reference.
// A repository name may itself contain "blobs" or "manifests", so the
// path is read from its end, where the reference cannot hold a slash.
func parseRoute(p string) (kind routeKind, repo, ref string, ok bool) {
	if repo, ok := strings.CutSuffix(p, "/tags/list"); ok {
		return routeTags, repo, "", true
	}
	for _, c := range []struct {
		sep  string
		kind routeKind
	}{{"/blobs/uploads/", routeUpload}, {"/manifests/", routeManifest}, {"/blobs/", routeBlob}} {
		i := strings.LastIndex(p, c.sep)
		if i < 0 || strings.Contains(p[i+len(c.sep):], "/") {
			continue
		}
		repo, ref = p[:i], p[i+len(c.sep):]
		if c.kind == routeUpload && ref == "" {
			return routeUploads, repo, "", true
		}
		if ref == "" {
			return 0, "", "", false
		}
		return c.kind, repo, ref, true
	}
	return 0, "", "", false
}

var (
	// repoRE is the OCI repository name grammar; no component can be "."
	// or "..", or start with "_", which keeps names safe as paths.
	repoRE   = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	uploadRE = regexp.MustCompile(`^[a-f0-9]{32}$`)
	hexRE    = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

// parseDigest accepts sha256 digests only, the one algorithm Surge writes.
func parseDigest(s string) (v1.Hash, bool) {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || !hexRE.MatchString(h) {
		return v1.Hash{}, false
	}
	return v1.Hash{Algorithm: "sha256", Hex: h}, true
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) error {
	rest, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	if !ok {
		return errorf(http.StatusNotFound, "NOT_FOUND", "no registry endpoint at %s", req.URL.Path)
	}
	m := req.Method
	if rest == "" {
		if m != http.MethodGet && m != http.MethodHead {
			return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s /v2/ is not supported", m)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}\n")
		return nil
	}
	kind, repo, ref, ok := parseRoute(rest)
	if !ok {
		return errorf(http.StatusNotFound, "NOT_FOUND", "no registry endpoint at %s", req.URL.Path)
	}
	if len(repo) > 255 || !repoRE.MatchString(repo) {
		return errorf(http.StatusBadRequest, "NAME_INVALID", "invalid repository name %q: want lowercase path components like \"team/hello\"", repo)
	}
	read := m == http.MethodGet || m == http.MethodHead
	switch {
	case kind == routeTags && m == http.MethodGet:
		return r.listTags(w, req, repo)
	case kind == routeManifest && read:
		return r.getManifest(w, req, repo, ref)
	case kind == routeManifest && m == http.MethodPut:
		return r.putManifest(w, req, repo, ref)
	case kind == routeBlob && read:
		return r.getBlob(w, req, ref)
	case kind == routeUploads && m == http.MethodPost:
		return r.startUpload(w, req, repo)
	case kind == routeUpload && !uploadRE.MatchString(ref):
		return errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", ref)
	case kind == routeUpload && m == http.MethodGet:
		size, err := r.uploadSize(ref)
		if err != nil {
			return err
		}
		uploadHeaders(w, repo, ref, size)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case kind == routeUpload && m == http.MethodPatch:
		size, err := r.appendUpload(req, ref)
		if err != nil {
			return err
		}
		uploadHeaders(w, repo, ref, size)
		w.WriteHeader(http.StatusAccepted)
		return nil
	case kind == routeUpload && m == http.MethodPut:
		return r.finishUpload(w, req, repo, ref, req.URL.Query().Get("digest"))
	case kind == routeUpload && m == http.MethodDelete:
		if err := os.Remove(r.uploadPath(ref)); errors.Is(err, fs.ErrNotExist) {
			return errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", ref)
		} else if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s %s is not supported", m, req.URL.Path)
}

func (r *Registry) blobPath(d v1.Hash) string {
	return filepath.Join(r.cfg.Dir, "blobs", "sha256", d.Hex[:2], d.Hex)
}

func (r *Registry) uploadPath(id string) string { return filepath.Join(r.cfg.Dir, "uploads", id) }

func (r *Registry) repoDir(repo string) string {
	return filepath.Join(r.cfg.Dir, "repositories", filepath.FromSlash(repo))
}

func (r *Registry) manifestLink(repo string, d v1.Hash) string {
	return filepath.Join(r.repoDir(repo), "_manifests", "sha256", d.Hex)
}

func (r *Registry) tagPath(repo, tag string) string {
	return filepath.Join(r.repoDir(repo), "_tags", tag)
}

// touch marks a blob as just used, so that GC's grace period covers a
// push that skipped uploading it because it was already there.
func (r *Registry) touch(path string) {
	now := r.cfg.Clock.Now()
	_ = os.Chtimes(path, now, now)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// install renames a complete, fsynced file into place and makes the
// rename durable.
func install(src, dst string) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFile writes data to path atomically: through a temporary file in
// tmp/, fsynced, then renamed.
func (r *Registry) writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(r.cfg.Dir, "tmp"), "w-")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = install(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}
