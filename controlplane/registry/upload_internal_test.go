package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// serve sends one request to the registry and returns the answer.
func serve(t *testing.T, r *Registry, method, path string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(method, path, bytes.NewReader(body)))
	return w
}

// TestUploadStoresTheBytesItVerified is the race of finding 6: a PATCH
// that opened an upload before its PUT took it writes on after the PUT
// checked the digest. What the registry stores under the digest is what
// it checked, never what came later.
func TestUploadStoresTheBytesItVerified(t *testing.T) {
	r, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	good := []byte("the layer the client pushed")
	sum := sha256.Sum256(good)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	w := serve(t, r, "POST", "/v2/hello/blobs/uploads/", nil)
	if w.Code != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", w.Code, w.Body)
	}
	loc := w.Header().Get("Location")
	if w := serve(t, r, "PATCH", loc, good); w.Code != http.StatusAccepted {
		t.Fatalf("patch: %d %s", w.Code, w.Body)
	}
	var late *httptest.ResponseRecorder
	r.testHookVerified = func(taken string) {
		// The PATCH in flight, through the file it holds open...
		f, err := os.OpenFile(taken, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Errorf("open the taken upload: %v", err)
			return
		}
		if _, err := f.Write([]byte("and what an attacker appended")); err != nil {
			t.Error(err)
		}
		f.Close()
		// ...and one that comes now, which finds no upload.
		late = serve(t, r, "PATCH", loc, []byte("more"))
	}
	if w := serve(t, r, "PUT", loc+"?digest="+digest, nil); w.Code != http.StatusCreated {
		t.Fatalf("finish: %d %s", w.Code, w.Body)
	}
	if late == nil || late.Code != http.StatusNotFound {
		t.Errorf("a PATCH after the PUT took the upload: %v, want 404", late)
	}
	r.testHookVerified = nil
	stored, err := os.ReadFile(r.blobPath(mustDigest(t, digest)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, good) {
		t.Errorf("blob %s holds %q, want %q", digest, stored, good)
	}
	if w := serve(t, r, "PUT", loc+"?digest="+digest, nil); w.Code != http.StatusNotFound {
		t.Errorf("a second PUT of the upload: %d, want 404", w.Code)
	}
	if ents, _ := os.ReadDir(r.cfg.Dir + "/tmp"); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d files after the upload", len(ents))
	}
}

func mustDigest(t *testing.T, s string) v1.Hash {
	t.Helper()
	d, ok := parseDigest(s)
	if !ok {
		t.Fatalf("%q is no digest", s)
	}
	return d
}
