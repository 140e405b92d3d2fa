package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func (r *Registry) getBlob(w http.ResponseWriter, req *http.Request, ref string) error {
	d, ok := parseDigest(ref)
	if !ok {
		return errDigest(ref)
	}
	path := r.blobPath(d)
	if req.Method == http.MethodHead {
		// A HEAD that finds the blob refreshes its age (see touch); under
		// the lock, GC has either deleted the blob already or will see it
		// fresh.
		r.mu.RLock()
		defer r.mu.RUnlock()
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(http.StatusNotFound, "BLOB_UNKNOWN", "blob %s is not in the registry", d)
	} else if err != nil {
		return err
	}
	defer f.Close()
	if req.Method == http.MethodHead {
		r.touch(path)
	}
	serveContent(w, req, f, "application/octet-stream", d)
	return nil
}

// serveContent answers GET and HEAD, with ranges, for immutable content.
func serveContent(w http.ResponseWriter, req *http.Request, f *os.File, mediaType string, d v1.Hash) {
	h := w.Header()
	h.Set("Content-Type", mediaType)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	http.ServeContent(w, req, "", time.Time{}, f)
}

func (r *Registry) startUpload(w http.ResponseWriter, req *http.Request, repo string) error {
	q := req.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		if d, ok := parseDigest(mount); ok {
			r.mu.RLock()
			found := exists(r.blobPath(d))
			if found {
				r.touch(r.blobPath(d))
			}
			r.mu.RUnlock()
			if found {
				blobCreated(w, repo, d)
				return nil
			}
		}
		// Not here: the client uploads it, as the spec says.
	}
	if q.Has("digest") {
		if _, ok := parseDigest(q.Get("digest")); !ok {
			return errDigest(q.Get("digest"))
		}
	}
	var buf [16]byte
	_, _ = rand.Read(buf[:])
	id := hex.EncodeToString(buf[:])
	f, err := os.OpenFile(r.uploadPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	if q.Has("digest") { // monolithic: POST ?digest= with the whole blob
		return r.finishUpload(w, req, repo, id, q.Get("digest"))
	}
	uploadHeaders(w, repo, id, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func uploadHeaders(w http.ResponseWriter, repo, id string, size int64) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	h.Set("Docker-Upload-UUID", id)
	h.Set("Range", "0-"+strconv.FormatInt(max(size-1, 0), 10))
	h.Set("Content-Length", "0")
}

func blobCreated(w http.ResponseWriter, repo string, d v1.Hash) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (r *Registry) uploadSize(id string) (int64, error) {
	fi, err := os.Stat(r.uploadPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", id)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// appendUpload appends a request's body to an upload and returns its new
// size. A Content-Range header ("START-END", inclusive) must start where
// the upload ends; a chunk that is cut short is taken back.
func (r *Registry) appendUpload(req *http.Request, id string) (int64, error) {
	f, err := os.OpenFile(r.uploadPath(id), os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", id)
	} else if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size, body, want := fi.Size(), io.Reader(req.Body), int64(-1)
	if cr := req.Header.Get("Content-Range"); cr != "" {
		s, e, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-")
		start, err1 := strconv.ParseInt(s, 10, 64)
		end, err2 := strconv.ParseInt(e, 10, 64)
		if !ok || err1 != nil || err2 != nil || end < start {
			return 0, errorf(http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "Content-Range %q: want START-END", cr)
		}
		if start != size {
			oe := errorf(http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID",
				"chunk starts at byte %d but the upload has %d bytes", start, size)
			oe.header = http.Header{"Range": {"0-" + strconv.FormatInt(max(size-1, 0), 10)}}
			return 0, oe
		}
		want = end - start + 1
		body = io.LimitReader(body, want)
	}
	limit := r.cfg.MaxBlobSize - size
	if want > limit || req.ContentLength > limit {
		return 0, tooLarge(r.cfg.MaxBlobSize)
	}
	n, err := io.Copy(f, io.LimitReader(body, limit+1))
	if err == nil && n > limit {
		err = tooLarge(r.cfg.MaxBlobSize)
	}
	if err == nil && want >= 0 && n != want {
		err = errorf(http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "chunk has %d bytes, Content-Range says %d", n, want)
	}
	if err != nil {
		_ = f.Truncate(size)
		return 0, err
	}
	return size + n, nil
}

// finishUpload appends the last chunk (if any), checks the digest the
// client claims against the bytes as stored, and moves them into the blob
// store.
//
// The check and the store are one: the upload is first taken out of
// uploads/ (a second PUT, or a PATCH that comes later, finds no upload),
// then copied into a file of this request's own, hashing the bytes as they
// are written, and that file is what is renamed into place. A PATCH of the
// same upload that opened it before it was taken may still write to it,
// but not to the copy: the blob holds exactly the bytes whose digest was
// checked, whatever races it. The copy costs a second write of each blob.
func (r *Registry) finishUpload(w http.ResponseWriter, req *http.Request, repo, id, digest string) error {
	want, ok := parseDigest(digest)
	if !ok {
		return errDigest(digest)
	}
	if _, err := r.appendUpload(req, id); err != nil {
		return err
	}
	taken := filepath.Join(r.cfg.Dir, "tmp", "upload-"+id)
	if err := os.Rename(r.uploadPath(id), taken); errors.Is(err, fs.ErrNotExist) {
		return errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", id)
	} else if err != nil {
		return fmt.Errorf("finish upload: %w", err)
	}
	defer os.Remove(taken)
	blob, got, err := r.copyHashed(taken)
	if err != nil {
		return fmt.Errorf("finish upload: %w", err)
	}
	if r.testHookVerified != nil {
		r.testHookVerified(taken)
	}
	if got != want {
		_ = os.Remove(blob)
		oe := errorf(http.StatusBadRequest, "DIGEST_INVALID", "uploaded content has digest %s, not %s", got, want)
		oe.Detail = map[string]string{"expected": want.String(), "actual": got.String()}
		return oe
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	dst := r.blobPath(want)
	if exists(dst) {
		_ = os.Remove(blob)
		r.touch(dst)
	} else if err := install(blob, dst); err != nil {
		_ = os.Remove(blob)
		return fmt.Errorf("store blob %s: %w", want, err)
	}
	blobCreated(w, repo, want)
	return nil
}

// copyHashed copies src into a new file in tmp/, fsynced, and returns its
// path and the SHA-256 of the bytes written to it.
func (r *Registry) copyHashed(src string) (path string, sum v1.Hash, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", v1.Hash{}, err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Join(r.cfg.Dir, "tmp"), "blob-")
	if err != nil {
		return "", v1.Hash{}, err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(out.Name())
		return "", v1.Hash{}, err
	}
	return out.Name(), v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

// tooLarge is the answer to a blob that grows past the limit.
func tooLarge(limit int64) *ociError {
	return errorf(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "blob is larger than the registry's limit of %d bytes", limit)
}
