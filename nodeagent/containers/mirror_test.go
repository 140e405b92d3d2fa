package containers

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestResolverFailsOverToMirrors: an image named at a control-plane
// server that is gone resolves through another server of the control
// plane, with the registry token; a registry that is not the control
// plane's gets no mirror and no token.
func TestResolverFailsOverToMirrors(t *testing.T) {
	const manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	var hits, withToken atomic.Int64
	live := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") == "Bearer tok" {
			withToken.Add(1)
		}
		if !strings.HasPrefix(r.URL.Path, "/v2/team/app/manifests/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
		_, _ = w.Write([]byte(manifest))
	}))
	defer live.Close()
	gone := httptest.NewTLSServer(http.NotFoundHandler())
	goneHost := strings.TrimPrefix(gone.URL, "https://")
	gone.Close()
	liveHost := strings.TrimPrefix(live.URL, "https://")

	cfg := DefaultConfig()
	cfg.RegistryHost, cfg.RegistryMirrors, cfg.RegistryToken = goneHost, []string{liveHost}, "tok"
	cfg.RegistryCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: live.Certificate().Raw})
	res, err := newResolver(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	name, _, err := res.Resolve(context.Background(), goneHost+"/team/app:v1")
	if err != nil {
		t.Fatalf("resolve through the other server: %v", err)
	}
	if name != goneHost+"/team/app:v1" || hits.Load() == 0 || withToken.Load() != hits.Load() {
		t.Errorf("resolved %q with %d requests, %d with the token; want the name kept and every request with the token", name, hits.Load(), withToken.Load())
	}
	live.Client().Transport.(*http.Transport).CloseIdleConnections()
}
