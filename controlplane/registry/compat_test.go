package registry_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/registry/registrytest"
)

// TestCraneWithBasicAuth drives the registry with crane, logged in the way
// `crane auth login -u any -p TOKEN` (and docker login) is: the token as a
// basic-auth password, after the registry's Basic challenge.
func TestCraneWithBasicAuth(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{Basic: true})
	opts := []crane.Option{
		crane.WithAuth(&authn.Basic{Username: "surge", Password: s.Token}),
		crane.WithTransport(s.Client().Transport),
	}
	img := randomImage(t)
	ref := s.Host + "/team/app:v1"
	if err := crane.Push(img, ref, opts...); err != nil {
		t.Fatalf("crane push: %v", err)
	}
	want, _ := img.Digest()
	got, err := crane.Digest(ref, opts...)
	if err != nil || got != want.String() {
		t.Fatalf("crane digest = %q, %v; want %s", got, err, want)
	}
	if err := crane.Copy(ref, s.Host+"/team/app-copy:v1", opts...); err != nil {
		t.Fatalf("crane copy: %v", err)
	}
	if err := crane.Tag(ref, "latest", opts...); err != nil {
		t.Fatalf("crane tag: %v", err)
	}
	tags, err := crane.ListTags(s.Host+"/team/app", opts...)
	if err != nil || strings.Join(tags, ",") != "latest,v1" {
		t.Errorf("crane ls = %v, %v; want latest,v1", tags, err)
	}
	pulled, err := crane.Pull(s.Host+"/team/app-copy:v1", opts...)
	if err != nil {
		t.Fatalf("crane pull: %v", err)
	}
	if d, _ := pulled.Digest(); d != want {
		t.Errorf("pulled %s, pushed %s", d, want)
	}
	d, err := s.Registry.Resolve("team/app", "latest")
	if err != nil || d != want {
		t.Errorf("Resolve(team/app, latest) = %s, %v; want %s", d, err, want)
	}
	for _, ref := range [][2]string{{"team/app", "v9"}, {"team/nope", "v1"}, {"Bad", "v1"}} {
		if _, err := s.Registry.Resolve(ref[0], ref[1]); !errors.Is(err, registry.ErrUnknown) {
			t.Errorf("Resolve(%s:%s) = %v, want ErrUnknown", ref[0], ref[1], err)
		}
	}
	wrong := []crane.Option{crane.WithAuth(&authn.Basic{Username: "surge", Password: "wrong"}), crane.WithTransport(s.Client().Transport)}
	var te *transport.Error
	if _, err := crane.Digest(ref, wrong...); !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Errorf("crane with a wrong token: %v, want 401", err)
	}
}

// TestDockerPushSequence replays the requests `docker push` makes, which
// differ from crane's: a HEAD of each blob first, one streamed PATCH
// without Content-Range, a PUT with an empty body and the digest, and a
// Docker schema 2 manifest.
func TestDockerPushSequence(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{Basic: true})
	send := func(method, url string, body io.Reader, header ...string) *http.Response {
		t.Helper()
		if !strings.HasPrefix(url, "http") {
			url = s.URL + url
		}
		req, _ := http.NewRequest(method, url, body)
		req.SetBasicAuth("docker", s.Token)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	layer, config := []byte("layer bytes, as docker streams them"), []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	for _, blob := range [][]byte{layer, config} {
		d := digestOf(blob)
		expect(t, send("HEAD", "/v2/team/web/blobs/"+d, nil), http.StatusNotFound, "")
		start := send("POST", "/v2/team/web/blobs/uploads/", nil)
		expect(t, start, http.StatusAccepted, "")
		// A body of unknown length: chunked, as docker sends it.
		patch := send("PATCH", start.Header.Get("Location"), io.MultiReader(bytes.NewReader(blob)), "Content-Type", "application/octet-stream")
		expect(t, patch, http.StatusAccepted, "")
		loc := patch.Header.Get("Location")
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		expect(t, send("PUT", loc+sep+"digest="+d, nil, "Content-Length", "0"), http.StatusCreated, "")
		expect(t, send("HEAD", "/v2/team/web/blobs/"+d, nil), http.StatusOK, "")
	}
	// A cross-repository mount, as docker tries for layers it pushed
	// elsewhere.
	expect(t, send("POST", "/v2/team/other/blobs/uploads/?mount="+digestOf(layer)+"&from=team/web", nil), http.StatusCreated, "")
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",` +
		`"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":` + strconv.Itoa(len(config)) + `,"digest":"` + digestOf(config) + `"},` +
		`"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":` + strconv.Itoa(len(layer)) + `,"digest":"` + digestOf(layer) + `"}]}`
	put := send("PUT", "/v2/team/web/manifests/v1", strings.NewReader(manifest), "Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
	expect(t, put, http.StatusCreated, "")
	if got := put.Header.Get("Docker-Content-Digest"); got != digestOf([]byte(manifest)) {
		t.Errorf("Docker-Content-Digest = %q, want %s", got, digestOf([]byte(manifest)))
	}
	get := send("GET", "/v2/team/web/manifests/v1", nil, "Accept", "application/vnd.docker.distribution.manifest.v2+json")
	expect(t, get, http.StatusOK, "")
	if ct := get.Header.Get("Content-Type"); ct != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Errorf("manifest Content-Type = %q", ct)
	}
}

// TestBlobSizeLimit: an upload that grows past MaxBlobSize is refused
// with 413, whether it says its length or streams it, and a client sees
// the limit in the message.
func TestBlobSizeLimit(t *testing.T) {
	s := registrytest.NewServer(t, registrytest.Options{Config: registry.Config{MaxBlobSize: 1000}})
	big := bytes.Repeat([]byte("x"), 1001)
	start := do(t, s, "POST", "/v2/team/big/blobs/uploads/", nil)
	expect(t, start, http.StatusAccepted, "")
	loc := start.Header.Get("Location")
	expect(t, do(t, s, "PATCH", loc, big), http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	expect(t, do(t, s, "PATCH", loc, big[:1000]), http.StatusAccepted, "")
	expect(t, do(t, s, "PATCH", loc, []byte("y")), http.StatusRequestEntityTooLarge, "SIZE_INVALID")

	img := randomImageSized(t, 4096)
	r, _ := name.ParseReference(s.Host + "/team/big:v1")
	err := writeImage(r, img, s)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "limit of 1000 bytes") {
		t.Errorf("push of a large image: %v, want a 413 naming the limit", err)
	}
}

// randomImageSized is an image of one random layer of size bytes.
func randomImageSized(t *testing.T, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeImage(r name.Reference, img v1.Image, s *registrytest.Server) error {
	return remote.Write(r, img, remoteOpts(s)...)
}
