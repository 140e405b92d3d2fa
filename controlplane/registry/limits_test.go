package registry_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/registry/registrytest"
)

// TestConcurrentUploadsOfOneDigest races, for one digest, an upload of the
// right bytes, uploads of wrong bytes claiming it, and a PATCH of garbage
// into an upload its PUT is finishing: whichever wins, the registry never
// holds other bytes under the digest.
func TestConcurrentUploadsOfOneDigest(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	for round := range 20 {
		good := []byte(fmt.Sprintf("layer %d, as pushed", round))
		d := digestOf(good)
		start := do(t, s, "POST", "/v2/hello/blobs/uploads/", nil)
		expect(t, start, http.StatusAccepted, "")
		loc := start.Header.Get("Location")
		expect(t, do(t, s, "PATCH", loc, good), http.StatusAccepted, "")

		var wg sync.WaitGroup
		codes := make([]int, 4)
		send := func(i int, method, path string, body []byte) {
			defer wg.Done()
			req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.Token)
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}
		wg.Add(4)
		go send(0, "PUT", loc+"?digest="+d, nil)
		go send(1, "PATCH", loc, []byte("garbage"))
		go send(2, "POST", "/v2/hello/blobs/uploads/?digest="+d, []byte("wrong bytes"))
		go send(3, "POST", "/v2/other/blobs/uploads/?digest="+d, good)
		wg.Wait()
		if codes[2] != http.StatusBadRequest {
			t.Errorf("round %d: wrong bytes under %s answered %d, want 400", round, d, codes[2])
		}
		if codes[3] != http.StatusCreated {
			t.Errorf("round %d: the right bytes answered %d, want 201", round, codes[3])
		}
		resp := do(t, s, "GET", "/v2/hello/blobs/"+d, nil)
		expect(t, resp, http.StatusOK, "")
		if got, _ := io.ReadAll(resp.Body); !bytes.Equal(got, good) {
			t.Fatalf("round %d: blob %s holds %q, want %q (PUT %d, PATCH %d)", round, d, got, good, codes[0], codes[1])
		}
	}
}

// TestRepositoryLimit: a manifest put to a new repository past
// MaxRepositories is refused with 403 DENIED naming the limit; the
// repositories there take more pushes.
func TestRepositoryLimit(t *testing.T) {
	cfg := registry.DefaultConfig()
	cfg.MaxRepositories = 2
	s := registrytest.NewServer(t, registrytest.Options{Config: cfg})
	img := randomImage(t)
	push(t, s, "team/a:v1", img)
	push(t, s, "team/b:v1", img)
	manifest, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	resp := do(t, s, "PUT", "/v2/team/c/manifests/v1", manifest, "Content-Type", string(mt))
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), `"DENIED"`) || !strings.Contains(string(b), "MaxRepositories") {
		t.Errorf("a third repository: %d %s, want 403 DENIED naming MaxRepositories", resp.StatusCode, b)
	}
	expect(t, do(t, s, "GET", "/v2/team/c/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
	push(t, s, "team/a:v2", img)
}
