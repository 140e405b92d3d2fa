package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/pki"
	"github.com/surgeplatform/surge/internal/backoff"
)

// ServerTokenFile holds an admin-role token that other servers present to
// join the cluster (--join-server): joining hands over the CA's key, so
// whoever holds it holds the cluster, and it goes only to server machines.
const ServerTokenFile = "server-token"

// clusterFiles are the files of the data dir that every server of a
// cluster shares, relative to it: the cluster CA and its key, which sign
// every server's certificates, the node CA and its key, which sign every
// node's, the gossip key, and the tokens. A joining server receives them
// (and the admin token); a snapshot carries them. A secrets' encryption
// key, when there is one, belongs here.
var clusterFiles = []string{"pki/ca.crt", "pki/ca.key", "pki/node-ca.crt", "pki/node-ca.key", "pki/" + pki.GossipKeyFile,
	JoinTokenFile, GatewayTokenFile, ServerTokenFile}

// fileMode is the mode a cluster file is written with: certificates are
// public, keys and tokens are not.
func fileMode(rel string) os.FileMode {
	if strings.HasSuffix(rel, ".crt") {
		return 0o644
	}
	return 0o600
}

// joined is what joining a cluster gave this server.
type joined struct {
	// initialCluster is every etcd member, this one included, as
	// NAME=PEER_URL,…; "" on an external etcd.
	initialCluster string
}

// joinTimeout bounds how long a server waits for the server it joins to
// answer, or for its new member to catch up and be promoted. It covers a
// first server still starting; past it, the start fails saying why.
const joinTimeout = 3 * time.Minute

// joinBackoff paces the attempts to join: the joined server may be
// starting, or another server joining (etcd adds one learner at a time).
var joinBackoff = backoff.Policy{Base: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.2}

// joinCluster, at the first start of a server given JoinServer, asks that
// server for the cluster's shared files and for an etcd membership, and
// writes the files to the data dir. It returns nil when there is nothing
// to join: no JoinServer, or a data dir that already holds this server's
// share of the cluster (a restart).
func (s *Server) joinCluster(ctx context.Context) (*joined, error) {
	if s.cfg.JoinServer == "" {
		return nil, nil
	}
	embedded := len(s.cfg.EtcdEndpoints) == 0
	if (embedded && hasEtcdData(s.cfg.DataDir)) || (!embedded && fileExists(filepath.Join(s.cfg.DataDir, "pki", "ca.key"))) {
		return nil, nil
	}
	hc, err := joinHTTPClient(s.cfg.JoinServerCA)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	req := api.JoinRequest{Name: s.cfg.Name, APIVersion: api.Version, Version: s.version}
	if embedded {
		req.PeerURL = "https://" + s.cfg.EtcdPeerAddr
	}
	body, _ := json.Marshal(req)
	target := strings.TrimRight(s.cfg.JoinServer, "/") + "/v1/cluster/members"
	var resp api.JoinResponse
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	err = backoff.Retry(jctx, s.clock, joinBackoff, func(ctx context.Context) error {
		err := postJSON(ctx, hc, target, s.cfg.JoinServerToken, body, &resp)
		var ae *api.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ae) && ae.Code == http.StatusUnauthorized:
			return backoff.Permanent(fmt.Errorf("join %s: --token was refused (%s): give that server's %s", s.cfg.JoinServer, ae.Message, ServerTokenFile))
		case errors.As(err, &ae) && ae.Code != http.StatusServiceUnavailable:
			return backoff.Permanent(fmt.Errorf("join %s: %s", s.cfg.JoinServer, ae.Message))
		}
		s.log.Info("waiting to join the cluster", "server", s.cfg.JoinServer, "err", err)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("join the cluster at --join-server %s: %w", s.cfg.JoinServer, err)
	}
	if err := s.writeClusterFiles(resp); err != nil {
		return nil, err
	}
	s.log.Info("joined the cluster", "server", s.cfg.JoinServer, "initial-cluster", resp.InitialCluster)
	return &joined{initialCluster: resp.InitialCluster}, nil
}

// writeClusterFiles writes what a join handed over to the data dir, with
// an admin client config that bootstrap completes with this server's URL.
func (s *Server) writeClusterFiles(resp api.JoinResponse) error {
	for rel, content := range resp.Files {
		if !slices.Contains(clusterFiles, rel) {
			return fmt.Errorf("join: the cluster sent %q, which is not a cluster file", rel)
		}
		path := filepath.Join(s.cfg.DataDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("join: %w", err)
		}
		if err := pki.WriteFileAtomic(path, []byte(content), fileMode(rel)); err != nil {
			return fmt.Errorf("join: %w", err)
		}
	}
	admin := client.Config{Server: s.cfg.JoinServer, CertificateAuthority: resp.Files["pki/ca.crt"], Token: resp.AdminToken}
	b, err := admin.Marshal()
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(s.cfg.DataDir, AdminConfigFile), b, 0o600)
}

// promoteSelf makes this server's new etcd member, a learner, a voting
// member once it has caught up with the leader. etcd forwards the request
// to its leader; it refuses while the learner lags.
func (s *Server) promoteSelf(ctx context.Context, e *embed.Etcd, cli *clientv3.Client) error {
	pctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	id := uint64(e.Server.MemberID())
	err := backoff.Retry(pctx, s.clock, joinBackoff, func(ctx context.Context) error {
		if !e.Server.IsLearner() {
			return nil
		}
		_, err := cli.MemberPromote(ctx, id)
		if errors.Is(rpctypes.Error(err), rpctypes.ErrMemberNotLearner) {
			return nil
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("promote etcd member %s to a voting member: %w", s.cfg.Name, err)
	}
	s.log.Info("etcd member promoted to a voting member", "name", s.cfg.Name)
	return nil
}

// joinHTTPClient trusts only the cluster CA: the token goes to no server
// whose certificate that CA did not sign.
func joinHTTPClient(caPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("--ca-file holds no PEM certificate: give the cluster CA, a server's pki/ca.crt")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: time.Minute}, nil
}

// postJSON posts body with a bearer token and decodes a JSON answer into
// out; a non-2xx answer is an *api.Error.
func postJSON(ctx context.Context, hc *http.Client, url, token string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var ae api.Error
		if json.Unmarshal(b, &ae) != nil || ae.Message == "" {
			ae.Message = strings.TrimSpace(string(b))
		}
		ae.Code = resp.StatusCode
		return &ae
	}
	return json.Unmarshal(b, out)
}

// memberNameRE is what a server's member name may be: a host name's
// characters, as etcd and the logs show it.
var memberNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// handleJoin answers POST /v1/cluster/members: it adds the joining
// server's etcd member as a learner and hands it the cluster's files. A
// member already at the joining server's peer URL is that machine come
// back without its data: it is removed and added anew.
func (s *Server) handleJoin(db *etcdConn) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeAPIError(w, s.log, api.BadRequest("join request: %v", err))
			return
		}
		resp, err := s.admit(r.Context(), db, req)
		if err != nil {
			writeAPIError(w, s.log, err)
			return
		}
		s.log.Info("a server joined", "name", req.Name, "peer-url", req.PeerURL, "version", req.Version)
		writeJSONBody(w, http.StatusOK, resp)
	}
}

// admit does handleJoin's work.
func (s *Server) admit(ctx context.Context, db *etcdConn, req api.JoinRequest) (*api.JoinResponse, error) {
	if !memberNameRE.MatchString(req.Name) {
		return nil, api.BadRequest("name %q: want up to 63 letters, digits, '.', '_' or '-' (--name)", req.Name)
	}
	if req.APIVersion != api.Version {
		return nil, api.NewError(http.StatusConflict, api.ReasonConflict,
			"server %s serves API %q and this cluster %q: servers of one cluster serve one API version", req.Name, req.APIVersion, api.Version)
	}
	resp := &api.JoinResponse{Files: map[string]string{}, AdminToken: s.admin.Token}
	for _, rel := range clusterFiles {
		b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", rel, err)
		}
		resp.Files[rel] = string(b)
	}
	if db.member == nil {
		return resp, nil // an external etcd: nothing to add
	}
	u, err := url.Parse(req.PeerURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, api.BadRequest("peer URL %q: want https://HOST:PORT, the joining server's --etcd-peer-addr", req.PeerURL)
	}
	members, err := db.client.MemberList(ctx)
	if err != nil {
		return nil, unavailable("list etcd members: %v", err)
	}
	for _, m := range members.Members {
		samePeer := slices.Contains(m.PeerURLs, req.PeerURL)
		switch {
		case samePeer && (m.Name == req.Name || m.Name == ""):
			// That machine again, without its data: replace its member.
			if _, err := db.client.MemberRemove(ctx, m.ID); err != nil {
				return nil, unavailable("remove the old member of %s: %v", req.Name, err)
			}
			s.log.Warn("replacing the etcd member of a server that joins again", "name", req.Name, "id", fmt.Sprintf("%x", m.ID))
		case samePeer:
			return nil, api.NewError(http.StatusConflict, api.ReasonConflict, "etcd member %s already has peer URL %s: give the joining server its own --etcd-peer-addr", m.Name, req.PeerURL)
		case m.Name == req.Name:
			return nil, api.NewError(http.StatusConflict, api.ReasonConflict, "a server named %s is already a member (peer URL %s): give the joining server another --name", m.Name, strings.Join(m.PeerURLs, ","))
		}
	}
	added, err := db.client.MemberAddAsLearner(ctx, []string{req.PeerURL})
	if errors.Is(rpctypes.Error(err), rpctypes.ErrTooManyLearners) {
		return nil, unavailable("another server is joining: try again once it has caught up")
	}
	if err != nil {
		return nil, unavailable("add etcd member %s: %v", req.Name, err)
	}
	var parts []string
	for _, m := range added.Members {
		name := m.Name
		if m.ID == added.Member.ID {
			name = req.Name
		}
		if name == "" {
			return nil, unavailable("etcd member %x at %s has not started yet: try again once it has", m.ID, strings.Join(m.PeerURLs, ","))
		}
		for _, p := range m.PeerURLs {
			parts = append(parts, name+"="+p)
		}
	}
	resp.InitialCluster = strings.Join(parts, ",")
	return resp, nil
}

// unavailable is a 503: the client tries again.
func unavailable(format string, args ...any) *api.Error {
	return api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, format, args...)
}

// writeJSONBody answers with a JSON body.
func writeJSONBody(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeAPIError answers with an *api.Error's body; any other error is
// logged, and the client told only that something failed.
func writeAPIError(w http.ResponseWriter, log *slog.Logger, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		log.Error("internal error", "err", err)
		ae = api.NewError(http.StatusInternalServerError, api.ReasonInternal, "internal error: the server log has the details")
	}
	writeJSONBody(w, ae.Code, ae)
}

// fileExists reports whether a path exists.
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
