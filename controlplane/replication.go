package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// replicaHeader marks a registry request from another server of the
// cluster: it is answered from what this server holds, without asking the
// other servers and without copying a push to them, so that copies never
// loop.
const replicaHeader = "Surge-Replica"

// tagsPrefix indexes the registry's tags in etcd: REPO:TAG holds the
// digest the tag was last pushed as, through any server. A server whose
// own copy of a tag is missing or older follows it.
const tagsPrefix = "/surge/registry/v1/tags/"

// errNowhere is a fetch that every other server answered with a 404, or
// that had no other server to ask.
var errNowhere = errors.New("on no other server")

// errNotThere is a peer's 404.
var errNotThere = errors.New("not on that server")

// replicaTimeout bounds copying one image to a peer, or fetching one from
// peers; a peer that takes longer is given up for the next.
const replicaTimeout = 2 * time.Minute

// manifestAccept are the manifest media types a server asks a peer for.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// replicated makes the registries of a cluster's servers one: each server
// keeps images on its own disk, and
//   - a push is acknowledged only once its image (the manifest and every
//     blob it names) is on a second server too, when another runs: the
//     manifest's PUT copies whatever the next running server lacks first;
//   - a pull of what this server lacks fetches it from the servers that
//     have it, verifies it (a blob against its digest, which the local
//     registry checks as it stores it) and keeps it;
//   - a tag pushed through any server is recorded in etcd, and a pull by
//     tag follows etcd's digest, so no server serves a stale tag.
//
// It wraps the local registry (an http.Handler serving /v2/ from a
// directory) and speaks the OCI distribution API to it and to the peers,
// so that the local registry's checks apply to every copy.
type replicated struct {
	local http.Handler
	peers *peers
	etcd  *clientv3.Client
	log   *slog.Logger
}

var _ http.Handler = (*replicated)(nil)

// ServeHTTP implements http.Handler.
func (r *replicated) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get(replicaHeader) != "" {
		r.local.ServeHTTP(w, req)
		return
	}
	kind, repo, ref := ociRoute(req.URL.Path)
	read := req.Method == http.MethodGet || req.Method == http.MethodHead
	var err error
	switch {
	case kind == ociBlob && read && isDigest(ref):
		err = r.ensureBlob(req.Context(), repo, ref)
	case kind == ociManifest && read && isDigest(ref):
		err = r.ensureManifest(req.Context(), repo, ref)
	case kind == ociManifest && read:
		err = r.followTag(req.Context(), repo, ref)
	case kind == ociManifest && req.Method == http.MethodPut:
		r.putManifest(w, req, repo, ref)
		return
	}
	switch {
	case errors.Is(err, errNowhere), req.Context().Err() != nil:
		// On no server (a push asking whether a blob is there, as a rule).
	case err != nil:
		// What could not be fetched is answered from what is here (a
		// 404); the reason goes to the log.
		r.log.Warn("registry: could not fetch from the other servers", "path", req.URL.Path, "err", err)
	}
	r.local.ServeHTTP(w, req)
}

// putManifest stores a pushed manifest here, copies its image to another
// running server, records its tag in etcd, and only then answers.
func (r *replicated) putManifest(w http.ResponseWriter, req *http.Request, repo, ref string) {
	rec := newRecorder()
	r.local.ServeHTTP(rec, req)
	if rec.code != http.StatusCreated {
		rec.replay(w)
		return
	}
	digest := rec.header.Get("Docker-Content-Digest")
	ctx := req.Context()
	if err := r.copyToPeer(ctx, repo, digest); err != nil {
		r.log.Error("registry: push not acknowledged: no other server took a copy", "repo", repo, "digest", digest, "err", err)
		ociUnavailable(w, fmt.Sprintf("the image is on this server only (%v): push it again", err))
		return
	}
	if !isDigest(ref) {
		if _, err := r.etcd.Put(ctx, tagsPrefix+repo+":"+ref, digest); err != nil {
			ociUnavailable(w, fmt.Sprintf("record tag %s:%s: %v: push it again", repo, ref, err))
			return
		}
	}
	rec.replay(w)
}

// copyToPeer makes another running server hold the image digest of repo,
// trying them by name until one does: a copy on two servers. With no
// other server running, one copy is all there can be.
func (r *replicated) copyToPeer(ctx context.Context, repo, digest string) error {
	ps, err := r.peers.list(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		cctx, cancel := context.WithTimeout(ctx, replicaTimeout)
		err := r.pushImage(cctx, p.APIURL, repo, digest)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// pushImage copies a manifest of this server, and what it names, to the
// server at base: the blobs and child manifests it lacks first, then the
// manifest by digest.
func (r *replicated) pushImage(ctx context.Context, base, repo, digest string) error {
	body, mediaType, err := r.localManifest(ctx, repo, digest)
	if err != nil {
		return err
	}
	refs, err := manifestRefs(body)
	if err != nil {
		return err
	}
	for _, d := range refs.blobs {
		if err := r.pushBlob(ctx, base, repo, d); err != nil {
			return err
		}
	}
	for _, d := range refs.children {
		if err := r.pushImage(ctx, base, repo, d); err != nil {
			return err
		}
	}
	resp, err := r.peers.do(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+digest, bytes.NewReader(body),
		http.Header{"Content-Type": {mediaType}})
	if err != nil {
		return err
	}
	return expect(resp, http.StatusCreated, "put manifest "+digest)
}

// pushBlob copies a blob of this server to the server at base, unless it
// has it: a monolithic upload, which the peer checks against the digest.
func (r *replicated) pushBlob(ctx context.Context, base, repo, digest string) error {
	resp, err := r.peers.do(ctx, http.MethodHead, base+"/v2/"+repo+"/blobs/"+digest, nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	// The blob streams from this server's registry to the peer's.
	pr, pw := io.Pipe()
	read := make(chan struct{})
	go func() {
		defer close(read)
		rec := &streamWriter{header: http.Header{}, w: pw}
		r.local.ServeHTTP(rec, localRequest(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+digest, nil, nil))
		if rec.code != http.StatusOK && rec.code != 0 {
			pw.CloseWithError(fmt.Errorf("read blob %s here: status %d", digest, rec.code))
			return
		}
		pw.Close()
	}()
	resp, err = r.peers.do(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+digest, pr,
		http.Header{"Content-Type": {"application/octet-stream"}})
	pr.CloseWithError(errors.New("upload ended")) // stops the reading if the upload stopped first
	<-read
	if err != nil {
		return err
	}
	return expect(resp, http.StatusCreated, "upload blob "+digest)
}

// ensureBlob fetches a blob this server lacks from the first peer that
// has it, and keeps it.
func (r *replicated) ensureBlob(ctx context.Context, repo, digest string) error {
	if r.localHas(ctx, "/v2/"+repo+"/blobs/"+digest) {
		return nil
	}
	return r.fromPeers(ctx, func(ctx context.Context, base string) error { return r.fetchBlob(ctx, base, repo, digest) })
}

// fetchBlob copies a blob from the server at base into this one's
// registry, which checks it against its digest as it stores it.
func (r *replicated) fetchBlob(ctx context.Context, base, repo, digest string) error {
	resp, err := r.peers.do(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+digest, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotThere
	}
	if resp.StatusCode != http.StatusOK {
		return expect(resp, http.StatusOK, "get blob "+digest)
	}
	rec := newRecorder()
	r.local.ServeHTTP(rec, localRequest(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest, resp.Body,
		http.Header{"Content-Type": {"application/octet-stream"}}))
	if rec.code != http.StatusCreated {
		return fmt.Errorf("store blob %s: status %d: %s", digest, rec.code, bytes.TrimSpace(rec.body.Bytes()))
	}
	return nil
}

// ensureManifest fetches a manifest of repo this server lacks, with what
// it names, from the first peer that has it.
func (r *replicated) ensureManifest(ctx context.Context, repo, digest string) error {
	if r.localHas(ctx, "/v2/"+repo+"/manifests/"+digest) {
		return nil
	}
	return r.fromPeers(ctx, func(ctx context.Context, base string) error { return r.fetchImage(ctx, base, repo, digest) })
}

// fetchImage copies a manifest from the server at base, its blobs and
// child manifests first, into this one's registry.
func (r *replicated) fetchImage(ctx context.Context, base, repo, digest string) error {
	resp, err := r.peers.do(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+digest, nil, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotThere
	}
	if resp.StatusCode != http.StatusOK {
		return expect(resp, http.StatusOK, "get manifest "+digest)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		return fmt.Errorf("manifest from %s does not match its digest %s", base, digest)
	}
	refs, err := manifestRefs(body)
	if err != nil {
		return err
	}
	for _, d := range refs.blobs {
		if !r.localHas(ctx, "/v2/"+repo+"/blobs/"+d) {
			if err := r.fetchBlob(ctx, base, repo, d); err != nil {
				return err
			}
		}
	}
	for _, d := range refs.children {
		if !r.localHas(ctx, "/v2/"+repo+"/manifests/"+d) {
			if err := r.fetchImage(ctx, base, repo, d); err != nil {
				return err
			}
		}
	}
	return r.putLocal(ctx, repo, digest, body, resp.Header.Get("Content-Type"))
}

// followTag makes this server's tag repo:tag name the digest etcd
// records for it, fetching that image when it is not here. A tag etcd
// does not know (pushed before the cluster had several servers) is left
// as it is.
func (r *replicated) followTag(ctx context.Context, repo, tag string) error {
	resp, err := r.etcd.Get(ctx, tagsPrefix+repo+":"+tag)
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	want := string(resp.Kvs[0].Value)
	rec := newRecorder()
	r.local.ServeHTTP(rec, localRequest(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil, http.Header{"Accept": {manifestAccept}}))
	if rec.code == http.StatusOK && rec.header.Get("Docker-Content-Digest") == want {
		return nil
	}
	if err := r.ensureManifest(ctx, repo, want); err != nil {
		return err
	}
	body, mediaType, err := r.localManifest(ctx, repo, want)
	if err != nil {
		return err
	}
	return r.putLocal(ctx, repo, tag, body, mediaType)
}

// fromPeers runs fetch against each other running server in turn until
// one succeeds.
func (r *replicated) fromPeers(ctx context.Context, fetch func(ctx context.Context, base string) error) error {
	ps, err := r.peers.list(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		fctx, cancel := context.WithTimeout(ctx, replicaTimeout)
		err := fetch(fctx, p.APIURL)
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNotThere) {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(errs) == 0 {
		return errNowhere
	}
	return errors.Join(errs...)
}

// localHas reports whether this server's registry answers a HEAD of path.
func (r *replicated) localHas(ctx context.Context, path string) bool {
	rec := newRecorder()
	r.local.ServeHTTP(rec, localRequest(ctx, http.MethodHead, path, nil, http.Header{"Accept": {manifestAccept}}))
	return rec.code == http.StatusOK
}

// localManifest reads a manifest of this server's registry.
func (r *replicated) localManifest(ctx context.Context, repo, ref string) (body []byte, mediaType string, err error) {
	rec := newRecorder()
	r.local.ServeHTTP(rec, localRequest(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil, http.Header{"Accept": {manifestAccept}}))
	if rec.code != http.StatusOK {
		return nil, "", fmt.Errorf("read manifest %s:%s here: status %d", repo, ref, rec.code)
	}
	return rec.body.Bytes(), rec.header.Get("Content-Type"), nil
}

// putLocal puts a manifest into this server's registry as repo:ref.
func (r *replicated) putLocal(ctx context.Context, repo, ref string, body []byte, mediaType string) error {
	rec := newRecorder()
	r.local.ServeHTTP(rec, localRequest(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body),
		http.Header{"Content-Type": {mediaType}}))
	if rec.code != http.StatusCreated {
		return fmt.Errorf("store manifest %s:%s: status %d: %s", repo, ref, rec.code, bytes.TrimSpace(rec.body.Bytes()))
	}
	return nil
}

// imageRefs are what a manifest names: an image's blobs (config and
// layers), an index's manifests.
type imageRefs struct {
	blobs, children []string
}

// manifestRefs reads what an OCI or Docker schema 2 manifest or index
// names. Layers kept elsewhere by definition (foreign, non-distributable)
// are left out, as the registry leaves them out.
func manifestRefs(body []byte) (imageRefs, error) {
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return imageRefs{}, fmt.Errorf("manifest is not JSON: %w", err)
	}
	var refs imageRefs
	if m.Config != nil {
		refs.blobs = append(refs.blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		if !strings.Contains(l.MediaType, "foreign") && !strings.Contains(l.MediaType, "nondistributable") {
			refs.blobs = append(refs.blobs, l.Digest)
		}
	}
	for _, c := range m.Manifests {
		refs.children = append(refs.children, c.Digest)
	}
	for _, d := range append(append([]string(nil), refs.blobs...), refs.children...) {
		if !isDigest(d) {
			return imageRefs{}, fmt.Errorf("manifest names %q, not a sha256 digest", d)
		}
	}
	return refs, nil
}

// ociKind is what a /v2/ path addresses, as far as replication cares.
type ociKind int

const (
	ociOther ociKind = iota
	ociBlob
	ociManifest
)

// ociRoute splits a /v2/REPO/blobs/REF or /v2/REPO/manifests/REF path.
// The path is read from its end, since a repository's name may itself
// hold "blobs" or "manifests"; uploads and tag lists are ociOther.
func ociRoute(path string) (kind ociKind, repo, ref string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok || strings.Contains(rest, "/blobs/uploads/") {
		return ociOther, "", ""
	}
	for _, c := range []struct {
		sep  string
		kind ociKind
	}{{"/manifests/", ociManifest}, {"/blobs/", ociBlob}} {
		i := strings.LastIndex(rest, c.sep)
		if i <= 0 {
			continue
		}
		ref = rest[i+len(c.sep):]
		if ref == "" || strings.Contains(ref, "/") {
			continue
		}
		return c.kind, rest[:i], ref
	}
	return ociOther, "", ""
}

// isDigest reports whether ref is a sha256 digest, the one algorithm the
// registry keeps.
func isDigest(ref string) bool {
	h, ok := strings.CutPrefix(ref, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// localRequest is a request to this server's own registry handler.
func localRequest(ctx context.Context, method, path string, body io.Reader, header http.Header) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, path, body) // a path, method and body of ours: cannot fail
	for k, v := range header {
		req.Header[k] = v
	}
	return req
}

// expect turns an answer other than want into an error, and closes it.
func expect(resp *http.Response, want int, what string) error {
	defer resp.Body.Close()
	if resp.StatusCode == want {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return fmt.Errorf("%s: status %d: %s", what, resp.StatusCode, bytes.TrimSpace(b))
}

// ociUnavailable answers a 503 in the distribution API's error form.
func ociUnavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAVAILABLE", "message": msg}}})
}

// recorder is a ResponseWriter that keeps an answer of the local registry
// to read or to pass on.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}, code: http.StatusOK} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func (r *recorder) WriteHeader(code int) { r.code = code }

// replay writes the kept answer to w.
func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.code)
	_, _ = w.Write(r.body.Bytes())
}

// streamWriter is a ResponseWriter that streams an answer's body to w.
type streamWriter struct {
	header http.Header
	code   int
	w      io.Writer
}

func (s *streamWriter) Header() http.Header { return s.header }

func (s *streamWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.code != http.StatusOK {
		return len(b), nil // an error body: not content
	}
	return s.w.Write(b)
}

func (s *streamWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
