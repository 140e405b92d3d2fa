package controlplane_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/imagebuild"
)

// pushRandom pushes a random image to the server's registry as ref and
// returns its digest.
func pushRandom(t *testing.T, c *client.Client, ref string) string {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagebuild.Push(context.Background(), img, ref, imagebuild.PushOptions{Token: c.Token(), Transport: c.Transport()}); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

// TestDeployPinsTheTagsDigest: a deploy of a tag in the built-in registry
// pins the revision to the digest the tag names then; a push that moves
// the tag and the same deploy again make a new revision, and the old one
// still runs its own digest, which GC keeps.
func TestDeployPinsTheTagsDigest(t *testing.T) {
	in := controlplanetest.StartWith(t, func(c *controlplane.Config) { c.GatewayURL = "http://surge.localhost:8080" })
	c := in.Client()
	ctx := context.Background()
	ref := in.Config.APIAddr + "/default/hello:latest"
	d1 := pushRandom(t, c, ref)
	f, err := c.PutFunction(ctx, hello(ref))
	if err != nil {
		t.Fatal(err)
	}
	if f.Status.ImageDigest != d1 || f.Status.URL != "http://hello.surge.localhost:8080" {
		t.Errorf("first deploy: digest %q, url %q; want %s and the gateway's URL", f.Status.ImageDigest, f.Status.URL, d1)
	}
	if f, _ := c.PutFunction(ctx, hello(ref)); f.Status.LatestRevision != "hello-00001" {
		t.Errorf("same tag, same digest: %s, want no new revision", f.Status.LatestRevision)
	}
	d2 := pushRandom(t, c, ref)
	f, err = c.PutFunction(ctx, hello(ref))
	if err != nil || f.Status.LatestRevision != "hello-00002" || f.Status.ImageDigest != d2 {
		t.Fatalf("the tag moved: %+v, %v; want hello-00002 pinned to %s", f.Status, err, d2)
	}
	for rev, want := range map[string]string{"hello-00001": d1, "hello-00002": d2} {
		r, err := client.Get[api.Revision](ctx, c, api.Key{Namespace: "default", Name: rev})
		if err != nil {
			t.Fatal(err)
		}
		if r.Spec.Image() != ref+"@"+want {
			t.Errorf("%s runs %s, want %s@%s", rev, r.Spec.Image(), ref, want)
		}
		// The pinned image is there to pull, whatever the tag says now.
		pinned, _ := name.ParseReference(r.Spec.Image())
		if _, err := remote.Head(pinned, remote.WithAuth(&authn.Bearer{Token: c.Token()}), remote.WithTransport(c.Transport())); err != nil {
			t.Errorf("pull %s: %v", r.Spec.Image(), err)
		}
	}
	// An image in the built-in registry that does not exist deploys
	// unpinned (its replicas say the pull failed).
	if f, err := c.PutFunction(ctx, hello(in.Config.APIAddr+"/default/nope:v1")); err != nil || f.Status.ImageDigest != "" {
		t.Errorf("a missing image: %+v, %v; want deployed, unpinned", f, err)
	}
	// A pull secret the function names must exist.
	fn := hello("example.test/private:v1")
	fn.Spec.ImagePullSecrets = []string{"ghcr"}
	_, err = c.PutFunction(ctx, fn)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Field != "spec.imagePullSecrets[0]" || !strings.Contains(ae.Message, "surge pull-secret set ghcr") {
		t.Errorf("a missing pull secret: %v, want a 422 naming spec.imagePullSecrets[0]", err)
	}
}

// TestDeployResolvesOtherRegistriesWithPullSecrets: an image in another
// registry is resolved with the namespace's pull secret for that registry.
func TestDeployResolvesOtherRegistriesWithPullSecrets(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.New(registry.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(private.Close)
	host := strings.TrimPrefix(private.URL, "http://")
	img, _ := random.Image(256, 1)
	ref, _ := name.ParseReference(host + "/team/app:v1")
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "robot", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()

	in := controlplanetest.Start(t)
	c := in.Client()
	ctx := context.Background()
	fn := &api.Function{Metadata: api.ObjectMeta{Name: "app"}, Spec: api.FunctionSpec{Image: ref.String()}}
	if f, err := c.PutFunction(ctx, fn); err != nil || f.Status.ImageDigest != "" {
		t.Fatalf("without a pull secret: %+v, %v; want deployed unpinned", f, err)
	}
	ps := &api.PullSecret{Metadata: api.ObjectMeta{Name: "private", Namespace: "default"},
		Spec: api.PullSecretSpec{Registry: host, Username: "robot", Password: "s3cret"}}
	if err := c.Do(ctx, http.MethodPost, client.CollectionPath[api.PullSecret]("default"), ps, nil); err != nil {
		t.Fatal(err)
	}
	f, err := c.PutFunction(ctx, fn)
	if err != nil || f.Status.ImageDigest != want.String() || f.Status.LatestRevision != "app-00002" {
		t.Errorf("with the pull secret: %+v, %v; want app-00002 pinned to %s", f, err, want)
	}
}
