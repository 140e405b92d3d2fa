package apiserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// agentDialTimeout bounds connecting to a node agent and its answer's
// header; a followed log then streams for as long as the client stays. It
// is a deadline on the network, so it runs on the wall clock.
const agentDialTimeout = 10 * time.Second

// logRoutes serve replicas' logs, as Kubernetes' API server serves pods'
// (and, later, exec): the caller is authorised here, with its token, and
// the API server fetches the log from the replica's node agent itself,
// with its own client certificate. No token ever leaves the API: the
// agent answers the API server alone, and the CLI talks to the API alone.
func (s *Server) logRoutes() {
	if s.cfg.NodeCA == nil || s.cfg.AgentClientCertificate == nil {
		return
	}
	s.handle("GET /v1/namespaces/{ns}/"+api.ReplicaKind.Plural+"/{name}/log", auth.ResourceLogs, auth.Read, s.replicaLog)
}

// replicaLog answers GET /v1/namespaces/NS/replicas/NAME/log[?follow=true]
// with the replica's log, streamed from its agent.
func (s *Server) replicaLog(w http.ResponseWriter, r *http.Request) {
	key := api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	if err := validNamespace(api.ReplicaKind, key.Namespace); err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	rep, err := store.Get[api.Replica](r.Context(), s.cfg.Store, key)
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	if rep.Spec.NodeName == "" {
		writeError(w, s.cfg.Log, api.NewError(http.StatusNotFound, api.ReasonNotFound, "replica %q is on no node yet: it has no log", key.Name))
		return
	}
	node, err := store.Get[api.Node](r.Context(), s.cfg.Store, api.Key{Name: rep.Spec.NodeName})
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	u, err := agentLogURL(node, key, isFollow(r))
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	c := s.agentClient(node)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		writeError(w, s.cfg.Log, api.NewError(http.StatusBadGateway, api.ReasonUnavailable,
			"cannot reach the agent of node %s at %s: %v", node.Metadata.Name, node.Status.AgentURL, err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		// The agent's own answer (a replica it no longer runs, say): its
		// JSON error, as it said it.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// agentLogURL is where node's agent serves a replica's log. The node's
// agent URL is dialed only when it is https at the node's registered
// address (checked as it is written, and again here).
func agentLogURL(node *api.Node, key api.Key, follow bool) (string, error) {
	if node.Status.AgentURL == "" {
		return "", api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable,
			"node %s serves no logs: its agent runs without --agent-addr", node.Metadata.Name)
	}
	addr, _ := netip.ParseAddr(node.Status.Address)
	if !api.ValidAgentURL(node.Status.AgentURL, addr.Unmap()) {
		return "", api.NewError(http.StatusBadGateway, api.ReasonUnavailable,
			"node %s's agent URL %q is not https at its address %q: not dialed", node.Metadata.Name, node.Status.AgentURL, node.Status.Address)
	}
	u := node.Status.AgentURL + "/v1/namespaces/" + url.PathEscape(key.Namespace) + "/" + api.ReplicaKind.Plural + "/" + url.PathEscape(key.Name) + "/log"
	if follow {
		u += "?follow=true"
	}
	return u, nil
}

// agentClient is an HTTPS client for one node's agent: it presents the API
// server's client certificate, and accepts only that node's serving
// certificate from the node CA, for the node's address. A certificate of
// another node, or of the cluster CA, does not pass.
func (s *Server) agentClient(node *api.Node) *http.Client {
	want := api.NodeCommonName(node.Metadata.Name)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*s.cfg.AgentClientCertificate},
			RootCAs:      s.nodeRoots,
			Time:         s.cfg.Clock.Now,
			// Verified against RootCAs and the URL's host (the node's
			// address) first; then it must be this node's.
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the agent sent no certificate")
				}
				leaf := cs.PeerCertificates[0]
				if leaf.Subject.CommonName != want || !slices.Equal(leaf.Subject.Organization, []string{api.NodeOrganization}) {
					return fmt.Errorf("the agent's certificate names %q, not %q", leaf.Subject.CommonName, want)
				}
				return nil
			},
		},
		DialContext:           (&net.Dialer{Timeout: agentDialTimeout}).DialContext,
		TLSHandshakeTimeout:   agentDialTimeout,
		ResponseHeaderTimeout: agentDialTimeout,
		DisableKeepAlives:     true,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
