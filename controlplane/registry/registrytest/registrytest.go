// Package registrytest runs a registry.Registry the way the API server
// serves it — over TLS, behind a bearer-token check — for tests of the
// registry and of its clients.
package registrytest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/controlplane/registry"
)

// Options configure a Server.
type Options struct {
	// Token is the bearer token the server accepts; default "test-token".
	Token string
	// Challenge adds `WWW-Authenticate: Bearer realm=...` to a 401, as a
	// registry with a token service would. The API server sends none.
	Challenge bool
	// Basic also takes the token as a basic-auth password and answers a
	// 401 with `WWW-Authenticate: Basic`, as the API server does for
	// docker login and crane. It overrides Challenge.
	Basic bool
	// Config configures the registry; Dir defaults to a test directory.
	Config registry.Config
}

// Server is a TLS registry server; Close is registered with t.Cleanup.
type Server struct {
	*httptest.Server
	Registry *registry.Registry
	Token    string
	// Host is the registry host for image references, "127.0.0.1:PORT".
	Host string
}

// NewServer starts a Server.
func NewServer(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Token == "" {
		o.Token = "test-token"
	}
	cfg := o.Config
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	reg, err := registry.New(cfg)
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	s := &Server{Registry: reg, Token: o.Token}
	h := RequireBearer(o.Token, o.Challenge, reg)
	if o.Basic {
		h = requireBasicOrBearer(o.Token, reg)
	}
	s.Server = httptest.NewTLSServer(h)
	t.Cleanup(s.Close)
	s.Host = strings.TrimPrefix(s.URL, "https://")
	return s
}

// RequireBearer answers 401 to a request without "Authorization: Bearer
// TOKEN", as the API server's middleware does, and passes the others on.
func RequireBearer(token string, challenge bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			if challenge {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="https://%s/v2/token",service="surge"`, r.Host))
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"code":401,"reason":"Unauthorized","error":"missing bearer token"}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireBasicOrBearer is RequireBearer that also takes the token as a
// basic-auth password, and challenges with Basic.
func requireBasicOrBearer(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pass, basic := r.BasicAuth()
		if r.Header.Get("Authorization") != "Bearer "+token && (!basic || pass != token) {
			w.Header().Set("WWW-Authenticate", `Basic realm="surge"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"code":401,"reason":"Unauthorized","error":"invalid or revoked token"}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
