package containers

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestEnsureImagePullAuth: an image in another registry, behind basic
// auth on loopback (plain HTTP, as Docker allows there), is pulled with
// the credentials WithPullAuth gives for its host, and refused without.
func TestEnsureImagePullAuth(t *testing.T) {
	e := needEnv(t)
	ctx := testContext(t, time.Minute)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer private.Close()
	host := strings.TrimPrefix(private.URL, "http://")
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host + "/team/private:v1")
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "robot", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}

	// A namespace of its own: the image is not there yet.
	ns := e.cfg.Namespace + "-pullauth"
	r := e.newRuntime(t, func(c *Config) { c.Namespace = ns })
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), ns)
		if l, err := r.client.LeasesService().Create(ctx, leases.WithRandomID()); err == nil {
			r.client.LeasesService().Delete(ctx, l, leases.SynchronousDelete)
		}
		if imgs, err := r.client.ImageService().List(ctx); err == nil {
			for _, i := range imgs {
				r.client.ImageService().Delete(ctx, i.Name, images.SynchronousDelete())
			}
		}
		if err := r.client.NamespaceService().Delete(ctx, ns); err != nil {
			t.Errorf("remove the test's containerd namespace %s: %v", ns, err)
		}
	})
	if err := r.EnsureImage(ctx, ref.String()); err == nil || !strings.Contains(err.Error(), "authorization failed") {
		t.Errorf("EnsureImage without credentials = %v, want it refused", err)
	}
	wrong := WithPullAuth(ctx, []RegistryAuth{{Host: "other.example", Username: "robot", Password: "s3cret"}})
	if err := r.EnsureImage(wrong, ref.String()); err == nil {
		t.Error("EnsureImage with another registry's credentials succeeded")
	}
	auth := WithPullAuth(ctx, []RegistryAuth{{Host: host, Username: "robot", Password: "s3cret"}})
	if err := r.EnsureImage(auth, ref.String()); err != nil {
		t.Errorf("EnsureImage with the pull secret: %v", err)
	}
}
