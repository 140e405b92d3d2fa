package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// LogSource opens a replica's log; the runtime implements it.
type LogSource interface {
	OpenLogs(ctx context.Context, id string, follow bool) (io.ReadCloser, error)
}

// logServer serves replica logs to the API server, and to nothing else:
// users read logs through the API (GET
// /v1/namespaces/NS/replicas/NAME/log), which authorises them and fetches
// the log from here with its own client certificate. The agent takes no
// bearer token at all, so none can be stolen here.
type logServer struct {
	agent *Agent
	logs  LogSource
}

func writeErr(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code)
	_ = json.NewEncoder(w).Encode(e)
}

// ServeHTTP answers GET /v1/namespaces/NS/replicas/NAME/log[?follow=true].
// The TLS handshake has checked the caller: the API server.
func (s *logServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	s.agent.mu.Lock()
	_, mine := s.agent.supervisors[api.Key{Namespace: ns, Name: name}]
	s.agent.mu.Unlock()
	if !mine {
		writeErr(w, api.NewError(http.StatusNotFound, api.ReasonNotFound, "replica %q does not run on node %s", name, s.agent.cfg.NodeName))
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

// logServerTLS is the log endpoint's TLS: the agent's serving certificate
// from the node CA (kept current by serving), and a client certificate
// required, from the cluster CA (apiCA), naming the API server. An etcd or
// API serving certificate of the same CA is not a client certificate of
// that name, and a node's certificate is not from that CA.
func logServerTLS(serving *certKeeper, apiCA *x509.CertPool, now func() time.Time) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := serving.get(); c != nil {
				return c, nil
			}
			return nil, errors.New("no serving certificate yet")
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  apiCA,
		Time:       now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			if leaf.Subject.CommonName != api.APIServerClientName || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				return fmt.Errorf("client certificate %q is not the API server's", leaf.Subject.CommonName)
			}
			return nil
		},
	}
}

// serveLogs gets a serving certificate from the control plane (kept
// current while it serves), listens on addr and serves logs to the API
// server until ctx ends. It returns the URL it serves at: https, at the
// node's address, the only URL the API server dials.
func (a *Agent) serveLogs(ctx context.Context, addr string, logs LogSource) (string, func(), error) {
	if len(a.cfg.apiCA) == 0 {
		return "", nil, errors.New("serve logs: the agent checks the API server's client certificate against the cluster CA; give it (--ca-file)")
	}
	apiCA := x509.NewCertPool()
	if !apiCA.AppendCertsFromPEM(a.cfg.apiCA) {
		return "", nil, errors.New("serve logs: the cluster CA holds no PEM certificate")
	}
	serving := &certKeeper{what: "serving certificate", clock: a.clock, log: a.log,
		renew: func(ctx context.Context) (tls.Certificate, error) {
			return client.RequestCertificate(ctx, a.api, a.cfg.NodeName, api.UsageServer)
		}}
	first, err := serving.renew(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("agent serving certificate: %w", err)
	}
	_ = serving.set(first)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/namespaces/{ns}/"+api.ReplicaKind.Plural+"/{name}/log", &logServer{agent: a, logs: logs})
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         logServerTLS(serving, apiCA, a.clock.Now),
		ReadHeaderTimeout: 10 * time.Second,
		// Handshakes refused (anyone but the API server) at debug level.
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeTLS(ln, "", "") })
	wg.Go(func() { serving.run(rctx) })
	wg.Go(func() { <-rctx.Done(); srv.Close() })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = a.cfg.Address
	}
	return "https://" + net.JoinHostPort(host, port), func() { stop(); wg.Wait() }, nil
}
