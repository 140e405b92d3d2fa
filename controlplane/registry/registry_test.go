package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/jonboulle/clockwork"

	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/registry/registrytest"
	"github.com/surgeplatform/surge/internal/clock"
)

func remoteOpts(s *registrytest.Server) []remote.Option {
	return []remote.Option{
		remote.WithAuth(&authn.Bearer{Token: s.Token}),
		remote.WithTransport(s.Client().Transport),
	}
}

func push(t *testing.T, s *registrytest.Server, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(s.Host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remoteOpts(s)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func pull(s *registrytest.Server, ref string) (v1.Image, error) {
	r, err := name.ParseReference(s.Host + "/" + ref)
	if err != nil {
		return nil, err
	}
	return remote.Image(r, remoteOpts(s)...)
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// do sends an authenticated request to the server.
func do(t *testing.T, s *registrytest.Server, method, path string, body []byte, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// expect checks a response's status and, for errors, its OCI error code.
func expect(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, b)
	}
	if code == "" {
		return
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("error body: %v", err)
	}
	if len(body.Errors) != 1 || body.Errors[0].Code != code {
		t.Fatalf("errors = %+v, want one %s", body.Errors, code)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestPushPullRoundTrip(t *testing.T) {
	for _, challenge := range []bool{false, true} {
		t.Run(map[bool]string{false: "no challenge", true: "bearer challenge"}[challenge], func(t *testing.T) {
			s := registrytest.NewServer(t, registrytest.Options{Challenge: challenge})
			img := randomImage(t)
			want := push(t, s, "default/hello:v1", img)

			for _, ref := range []string{"default/hello:v1", "default/hello@" + want.String()} {
				got, err := pull(s, ref)
				if err != nil {
					t.Fatalf("pull %s: %v", ref, err)
				}
				d, err := got.Digest()
				if err != nil {
					t.Fatal(err)
				}
				if d != want {
					t.Errorf("pull %s: digest %s, want %s", ref, d, want)
				}
				if err := validate.Image(got); err != nil {
					t.Errorf("pull %s: %v", ref, err)
				}
			}
		})
	}
}

func TestPushIndex(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(s.Host + "/multi:latest")
	if err := remote.WriteIndex(r, idx, remoteOpts(s)...); err != nil {
		t.Fatalf("push index: %v", err)
	}
	got, err := remote.Index(r, remoteOpts(s)...)
	if err != nil {
		t.Fatalf("pull index: %v", err)
	}
	if err := validate.Index(got); err != nil {
		t.Error(err)
	}
}

func TestUnauthorized(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	push(t, s, "hello:v1", randomImage(t))

	resp, err := s.Client().Get(s.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without a token: %d, want 401", resp.StatusCode)
	}

	r, _ := name.ParseReference(s.Host + "/hello:v1")
	for name, auth := range map[string]authn.Authenticator{
		"anonymous":   authn.Anonymous,
		"wrong token": &authn.Bearer{Token: "nope"},
	} {
		_, err = remote.Image(r, remote.WithAuth(auth), remote.WithTransport(s.Client().Transport))
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s pull: %v, want a 401", name, err)
		}
	}
}

func TestMonolithicUpload(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	blob := []byte("hello, blob")
	d := digestOf(blob)

	resp := do(t, s, "POST", "/v2/hello/blobs/uploads/?digest="+d, blob)
	expect(t, resp, http.StatusCreated, "")
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		t.Errorf("Docker-Content-Digest = %q, want %q", got, d)
	}

	resp = do(t, s, "HEAD", "/v2/hello/blobs/"+d, nil)
	expect(t, resp, http.StatusOK, "")
	if resp.ContentLength != int64(len(blob)) {
		t.Errorf("HEAD Content-Length = %d, want %d", resp.ContentLength, len(blob))
	}
	resp = do(t, s, "GET", "/v2/hello/blobs/"+d, nil, "Range", "bytes=7-")
	expect(t, resp, http.StatusPartialContent, "")
	if b, _ := io.ReadAll(resp.Body); string(b) != "blob" {
		t.Errorf("ranged GET = %q, want %q", b, "blob")
	}

	// Mounting a present blob from another repository needs no upload.
	resp = do(t, s, "POST", "/v2/other/blobs/uploads/?mount="+d+"&from=hello", nil)
	expect(t, resp, http.StatusCreated, "")
}

func TestCorruptedUploadRejected(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	claimed := digestOf([]byte("what the client meant to send"))

	resp := do(t, s, "POST", "/v2/hello/blobs/uploads/?digest="+claimed, []byte("what arrived"))
	expect(t, resp, http.StatusBadRequest, "DIGEST_INVALID")

	resp = do(t, s, "POST", "/v2/hello/blobs/uploads/", nil)
	expect(t, resp, http.StatusAccepted, "")
	loc := resp.Header.Get("Location")
	expect(t, do(t, s, "PATCH", loc, []byte("what arrived")), http.StatusAccepted, "")
	expect(t, do(t, s, "PUT", loc+"?digest="+claimed, nil), http.StatusBadRequest, "DIGEST_INVALID")

	expect(t, do(t, s, "HEAD", "/v2/hello/blobs/"+claimed, nil), http.StatusNotFound, "")
	expect(t, do(t, s, "GET", "/v2/hello/blobs/"+claimed, nil), http.StatusNotFound, "BLOB_UNKNOWN")
	expect(t, do(t, s, "GET", "/v2/hello/blobs/sha256:abc", nil), http.StatusBadRequest, "DIGEST_INVALID")
	// The failed upload is gone.
	expect(t, do(t, s, "GET", loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
}

func TestChunkedUpload(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	d := digestOf(blob)

	resp := do(t, s, "POST", "/v2/team/hello/blobs/uploads/", nil)
	expect(t, resp, http.StatusAccepted, "")
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/team/hello/blobs/uploads/") {
		t.Fatalf("Location = %q", loc)
	}

	resp = do(t, s, "PATCH", loc, blob[:4000], "Content-Range", "0-3999", "Content-Type", "application/octet-stream")
	expect(t, resp, http.StatusAccepted, "")
	if got := resp.Header.Get("Range"); got != "0-3999" {
		t.Errorf("Range after first chunk = %q, want 0-3999", got)
	}
	loc = resp.Header.Get("Location")

	// A chunk that does not start where the upload ends is refused, and
	// the upload is unchanged.
	resp = do(t, s, "PATCH", loc, blob[5000:6000], "Content-Range", "5000-5999")
	if got := resp.Header.Get("Range"); got != "0-3999" {
		t.Errorf("Range after refused chunk = %q, want 0-3999", got)
	}
	expect(t, resp, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")

	expect(t, do(t, s, "PATCH", loc, blob[4000:9000], "Content-Range", "4000-8999"), http.StatusAccepted, "")
	resp = do(t, s, "GET", loc, nil)
	expect(t, resp, http.StatusNoContent, "")
	if got := resp.Header.Get("Range"); got != "0-8999" {
		t.Errorf("upload status Range = %q, want 0-8999", got)
	}
	// The last chunk comes with the PUT.
	expect(t, do(t, s, "PUT", loc+"?digest="+d, blob[9000:]), http.StatusCreated, "")

	resp = do(t, s, "GET", "/v2/team/hello/blobs/"+d, nil)
	expect(t, resp, http.StatusOK, "")
	if got, _ := io.ReadAll(resp.Body); !bytes.Equal(got, blob) {
		t.Errorf("blob read back has %d bytes, differs from the %d uploaded", len(got), len(blob))
	}
}

func TestManifests(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	img := randomImage(t)
	d := push(t, s, "hello:v1", img)
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()

	for _, ref := range []string{"v1", d.String()} {
		resp := do(t, s, "GET", "/v2/hello/manifests/"+ref, nil)
		expect(t, resp, http.StatusOK, "")
		got, _ := io.ReadAll(resp.Body)
		if !bytes.Equal(got, raw) {
			t.Errorf("manifest by %s differs from the one pushed", ref)
		}
		if ct := resp.Header.Get("Content-Type"); ct != string(mt) {
			t.Errorf("manifest by %s: Content-Type %q, want %q", ref, ct, mt)
		}
		if dg := resp.Header.Get("Docker-Content-Digest"); dg != d.String() {
			t.Errorf("manifest by %s: Docker-Content-Digest %q, want %s", ref, dg, d)
		}
	}

	expect(t, do(t, s, "GET", "/v2/hello/manifests/v2", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expect(t, do(t, s, "GET", "/v2/nothere/manifests/v1", nil), http.StatusNotFound, "NAME_UNKNOWN")
	expect(t, do(t, s, "GET", "/v2/Bad_Name/manifests/v1", nil), http.StatusBadRequest, "NAME_INVALID")
	push(t, s, "team/hello:v1", img)
	expect(t, do(t, s, "GET", "/v2/team/manifests/v1", nil), http.StatusNotFound, "NAME_UNKNOWN")
	// Pushed to hello, not to other.
	expect(t, do(t, s, "GET", "/v2/other/manifests/"+d.String(), nil), http.StatusNotFound, "NAME_UNKNOWN")

	// A manifest whose layers were never pushed is refused.
	other := randomImage(t)
	raw2, _ := other.RawManifest()
	mt2, _ := other.MediaType()
	expect(t, do(t, s, "PUT", "/v2/hello/manifests/v2", raw2, "Content-Type", string(mt2)),
		http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
	// So is one whose digest is not the one in the URL.
	expect(t, do(t, s, "PUT", "/v2/hello/manifests/"+digestOf([]byte("x")), raw, "Content-Type", string(mt)),
		http.StatusBadRequest, "DIGEST_INVALID")
	expect(t, do(t, s, "PUT", "/v2/hello/manifests/v3", []byte("{not json"), "Content-Type", string(mt)),
		http.StatusBadRequest, "MANIFEST_INVALID")
}

func TestTagsList(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	img := randomImage(t)
	for _, tag := range []string{"v2", "latest", "v1"} {
		push(t, s, "team/hello:"+tag, img)
	}
	type list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	for _, tc := range []struct {
		query string
		want  list
		link  bool
	}{
		{"", list{"team/hello", []string{"latest", "v1", "v2"}}, false},
		{"?n=2", list{"team/hello", []string{"latest", "v1"}}, true},
		{"?n=2&last=v1", list{"team/hello", []string{"v2"}}, false},
	} {
		resp := do(t, s, "GET", "/v2/team/hello/tags/list"+tc.query, nil)
		expect(t, resp, http.StatusOK, "")
		var got list
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("tags/list%s (-want +got):\n%s", tc.query, diff)
		}
		if link := resp.Header.Get("Link") != ""; link != tc.link {
			t.Errorf("tags/list%s: Link header present = %v, want %v", tc.query, link, tc.link)
		}
	}
	expect(t, do(t, s, "GET", "/v2/team/nothere/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")

	// ggcr's lister agrees.
	repo, _ := name.NewRepository(s.Host + "/team/hello")
	tags, err := remote.List(repo, remoteOpts(s)...)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"latest", "v1", "v2"}, tags); diff != "" {
		t.Errorf("remote.List (-want +got):\n%s", diff)
	}
}

// nowClock is a fake clock that starts at the wall clock's now, since the
// registry compares it with file times, which stay real.
func nowClock() *clock.Fake { return clockwork.NewFakeClockAt(time.Now()) }

func blobExists(s *registrytest.Server, t *testing.T, d v1.Hash) bool {
	t.Helper()
	resp := do(t, s, "GET", "/v2/any/blobs/"+d.String(), nil)
	return resp.StatusCode == http.StatusOK
}

func imageBlobs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func TestGC(t *testing.T) {
	clk := nowClock()
	cfg := registry.DefaultConfig()
	cfg.Clock = clk
	s := registrytest.NewServer(t, registrytest.Options{Config: cfg})
	ctx := context.Background()

	kept := randomImage(t)
	// gone shares a layer with kept, and has one of its own.
	ownLayer, err := random.Layer(1024, "application/vnd.docker.image.rootfs.diff.tar.gzip")
	if err != nil {
		t.Fatal(err)
	}
	keptLayers, _ := kept.Layers()
	gone, err := mutate.AppendLayers(randomImage(t), keptLayers[0], ownLayer)
	if err != nil {
		t.Fatal(err)
	}
	keptDigest := push(t, s, "default/kept:v1", kept)
	push(t, s, "default/gone:v1", gone)
	push(t, s, "default/gone:v2", gone)
	idx, _ := random.Index(512, 1, 2)
	idxRef, _ := name.ParseReference(s.Host + "/default/multi:v1")
	if err := remote.WriteIndex(idxRef, idx, remoteOpts(s)...); err != nil {
		t.Fatal(err)
	}

	// An upload abandoned half way.
	resp := do(t, s, "POST", "/v2/default/gone/blobs/uploads/", nil)
	expect(t, resp, http.StatusAccepted, "")
	expect(t, do(t, s, "PATCH", resp.Header.Get("Location"), []byte("half")), http.StatusAccepted, "")

	keep, err := registry.KeepReferences([]string{
		"127.0.0.1:7070/default/kept@" + keptDigest.String(),
		"127.0.0.1:7070/default/multi:v1",
	})
	if err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes, kept or not.
	res, err := s.Registry.GC(ctx, func(registry.Image) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(registry.GCResult{}, res); diff != "" {
		t.Errorf("GC within grace deleted (-want +got):\n%s", diff)
	}

	clk.Advance(2 * time.Hour)
	var offered []string
	res, err = s.Registry.GC(ctx, func(img registry.Image) bool {
		offered = append(offered, img.Repository+":"+strings.Join(img.Tags, ","))
		return keep(img)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The index's two child manifests are offered untagged and kept
	// through their index.
	if diff := cmp.Diff([]string{"default/gone:v1,v2", "default/kept:v1", "default/multi:", "default/multi:", "default/multi:v1"}, slices.Sorted(slices.Values(offered))); diff != "" {
		t.Errorf("GC offered (-want +got):\n%s", diff)
	}
	// gone's manifest, config and layers go, but for the one it shares.
	shared, _ := keptLayers[0].Digest()
	goneManifest, _ := gone.Digest()
	goneBlobs := []v1.Hash{goneManifest}
	for _, d := range imageBlobs(t, gone) {
		if d != shared {
			goneBlobs = append(goneBlobs, d)
		}
	}
	if res.Manifests != 1 || res.Tags != 2 || res.Blobs != len(goneBlobs) || res.Bytes <= 0 || res.Uploads != 1 {
		t.Errorf("GC result %+v, want 1 manifest, 2 tags, %d blobs, 1 upload", res, len(goneBlobs))
	}
	for _, d := range imageBlobs(t, kept) {
		if !blobExists(s, t, d) {
			t.Errorf("kept blob %s was deleted", d)
		}
	}
	for _, d := range goneBlobs {
		if blobExists(s, t, d) {
			t.Errorf("unreferenced blob %s survived", d)
		}
	}
	if _, err := pull(s, "default/kept@"+keptDigest.String()); err != nil {
		t.Errorf("pull kept image after GC: %v", err)
	}
	if _, err := pull(s, "default/gone:v1"); err == nil {
		t.Error("pull of a collected image succeeded")
	}
	if got, err := remote.Index(idxRef, remoteOpts(s)...); err != nil {
		t.Errorf("pull kept index after GC: %v", err)
	} else if err := validate.Index(got); err != nil {
		t.Errorf("kept index after GC: %v", err)
	}
	expect(t, do(t, s, "GET", "/v2/default/gone/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")

	// A second run finds nothing more.
	res, err = s.Registry.GC(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(registry.GCResult{}, res); diff != "" {
		t.Errorf("second GC deleted (-want +got):\n%s", diff)
	}
}

func TestKeepReferencesReportsBadOnes(t *testing.T) {
	_, err := registry.KeepReferences([]string{"ok.example/a:v1", "UPPER/Case::", "x@sha256:zz"})
	if err == nil || strings.Count(err.Error(), "image reference") != 2 {
		t.Errorf("KeepReferences error = %v, want two bad references named", err)
	}
}

func TestNewValidates(t *testing.T) {
	cfg := registry.DefaultConfig()
	cfg.Dir = "relative"
	cfg.GCGrace = -1
	_, err := registry.New(cfg)
	if err == nil || !strings.Contains(err.Error(), "Dir") || !strings.Contains(err.Error(), "GCGrace") {
		t.Errorf("New = %v, want errors naming Dir and GCGrace", err)
	}
}

func TestGCSparesBlobsAClientFound(t *testing.T) {
	clk := nowClock()
	cfg := registry.DefaultConfig()
	cfg.Clock = clk
	s := registrytest.NewServer(t, registrytest.Options{Config: cfg})
	img := randomImage(t)
	push(t, s, "hello:v1", img)
	blobs := imageBlobs(t, img)

	// Hours later a push finds the config present and skips it; GC runs
	// before that push's manifest arrives.
	clk.Advance(2 * time.Hour)
	expect(t, do(t, s, "HEAD", "/v2/next/blobs/"+blobs[0].String(), nil), http.StatusOK, "")
	if _, err := s.Registry.GC(context.Background(), func(registry.Image) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if !blobExists(s, t, blobs[0]) {
		t.Error("GC deleted a blob a client had just found")
	}
	if blobExists(s, t, blobs[1]) {
		t.Error("GC kept an old unreferenced blob")
	}
}

func TestGCDuringPushes(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		for ctx.Err() == nil {
			if _, err := s.Registry.GC(ctx, func(registry.Image) bool { return false }); err != nil && ctx.Err() == nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	imgs := make([]v1.Image, 4)
	errs := make(chan error, len(imgs))
	for i := range imgs {
		imgs[i] = randomImage(t)
		go func() {
			r, _ := name.ParseReference(s.Host + "/hello:" + strconv.Itoa(i))
			errs <- remote.Write(r, imgs[i], remoteOpts(s)...)
		}()
	}
	for range imgs {
		if err := <-errs; err != nil {
			t.Errorf("push during GC: %v", err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("GC: %v", err)
	}
	for i := range imgs {
		got, err := pull(s, "hello:"+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("pull after GC: %v", err)
		}
		if err := validate.Image(got); err != nil {
			t.Error(err)
		}
	}
}
