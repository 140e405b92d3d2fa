package nodeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// LogSource opens a replica's log; the runtime implements it.
type LogSource interface {
	OpenLogs(ctx context.Context, id string, follow bool) (io.ReadCloser, error)
}

// whoamiTTL is how long a token's check against the API is trusted: a
// revoked token may read logs this long after it was revoked.
const whoamiTTL = 30 * time.Second

// logServer serves replica logs over HTTPS to holders of an admin or
// viewer token, checked against the API (the agent holds no token store).
type logServer struct {
	agent *Agent
	logs  LogSource

	mu    sync.Mutex
	roles map[string]cachedRole // by token
}

type cachedRole struct {
	role    string
	expires time.Time
}

func (s *logServer) role(ctx context.Context, token string) (string, error) {
	now := s.agent.clock.Now()
	s.mu.Lock()
	c, ok := s.roles[token]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.role, nil
	}
	var who struct {
		Role string `json:"role"`
	}
	if err := s.agent.api.WithToken(token).Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		return "", err
	}
	s.mu.Lock()
	if len(s.roles) > 1024 {
		clear(s.roles) // bounded: a flood of tokens costs re-checks, not memory
	}
	s.roles[token] = cachedRole{role: who.Role, expires: now.Add(whoamiTTL)}
	s.mu.Unlock()
	return who.Role, nil
}

func writeErr(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code)
	_ = json.NewEncoder(w).Encode(e)
}

// ServeHTTP answers GET /v1/namespaces/NS/replicas/NAME/log[?follow=true].
func (s *logServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.WriteHeader(http.StatusOK)
		return
	}
	token, ok := bearer(r)
	if !ok {
		writeErr(w, api.NewError(http.StatusUnauthorized, api.ReasonUnauthorized, "missing bearer token"))
		return
	}
	role, err := s.role(r.Context(), token)
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		writeErr(w, ae)
		return
	case err != nil:
		writeErr(w, api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "cannot check the token now: %v", err))
		return
	case role != "admin" && role != "viewer":
		writeErr(w, api.NewError(http.StatusForbidden, api.ReasonForbidden, "role %s may not read logs", role))
		return
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	s.agent.mu.Lock()
	_, mine := s.agent.supervisors[api.Key{Namespace: ns, Name: name}]
	s.agent.mu.Unlock()
	if !mine {
		writeErr(w, api.NotFound("replica", name))
		return
	}
	follow := r.URL.Query().Get("follow") == "true"
	rc, err := s.logs.OpenLogs(r.Context(), name, follow)
	if err != nil {
		writeErr(w, api.NewError(http.StatusNotFound, api.ReasonNotFound, "logs of replica %q: %v", name, err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rcw := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rcw.Flush()
		}
		if err != nil {
			return
		}
	}
}

func bearer(r *http.Request) (string, bool) {
	const p = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(p) || h[:len(p)] != p {
		return "", false
	}
	return h[len(p):], true
}

// serveLogs gets a serving certificate from the control plane, listens on
// addr and serves logs until ctx ends. It returns the URL it serves at.
func (a *Agent) serveLogs(ctx context.Context, addr string, logs LogSource) (string, func(), error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: a.cfg.NodeName},
	}, key)
	if err != nil {
		return "", nil, err
	}
	var resp struct{ Certificate string }
	req := map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}
	if err := a.api.Do(ctx, http.MethodPost, client.ObjectPath[api.Node](api.Key{Name: a.cfg.NodeName})+"/certificate", req, &resp); err != nil {
		return "", nil, fmt.Errorf("agent certificate: %w", err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return "", nil, fmt.Errorf("agent certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	ls := &logServer{agent: a, logs: logs, roles: map[string]cachedRole{}}
	mux.Handle("GET /v1/namespaces/{ns}/"+api.ReplicaKind.Plural+"/{name}/log", ls)
	mux.Handle("GET /healthz", ls)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
	go func() { <-ctx.Done(); srv.Close() }()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = a.cfg.Address
	}
	return "https://" + net.JoinHostPort(host, port), func() { srv.Close(); <-done }, nil
}
