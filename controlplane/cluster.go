package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// Keys of the cluster's own bookkeeping, beside the API's objects (under
// store.Prefix) so that the controllers' watch of those does not wake for
// them.
const (
	// serversPrefix holds each running server's api.ServerInfo, on a
	// lease that ends with it.
	serversPrefix = "/surge/cluster/v1/servers/"
	// storageVersionKey holds the layout version of Surge's keys in etcd.
	storageVersionKey = "/surge/cluster/v1/storage-version"
)

// serverTTL is the lease TTL, in seconds, of a server's entry under
// serversPrefix: how long a killed server stays listed. Peers that try it
// in that time find its port closed and go on to the next.
const serverTTL = 5

// StorageVersion is the layout of Surge's keys in etcd that this build
// reads and writes. A server refuses to run on an etcd that holds a newer
// one: during a rolling upgrade new servers join old ones, never the
// other way, and a layout change bumps it (with a migration run by the
// first new server).
const StorageVersion = 1

// checkStorageVersion records StorageVersion in a new cluster, and
// refuses a cluster whose layout is newer than this build's.
func checkStorageVersion(ctx context.Context, cli *clientv3.Client) error {
	v := strconv.Itoa(StorageVersion)
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(storageVersionKey), "=", 0)).
		Then(clientv3.OpPut(storageVersionKey, v)).
		Else(clientv3.OpGet(storageVersionKey)).
		Commit()
	if err != nil {
		return fmt.Errorf("read the storage version: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil
	}
	have, err := strconv.Atoi(string(kvs[0].Value))
	if err != nil {
		return fmt.Errorf("etcd holds storage version %q, not a number", kvs[0].Value)
	}
	if have > StorageVersion {
		return fmt.Errorf("etcd holds Surge's storage version %d, newer than this server's %d: run a newer surge on this server (an upgrade replaces old servers with new ones, never the other way)", have, StorageVersion)
	}
	return nil
}

// registerServer keeps this server's entry under serversPrefix, on a
// lease kept alive while it runs, until ctx ends; it registers again after
// losing the lease (etcd unreachable for longer than serverTTL). The
// lease is revoked on the way out, so a clean stop drops the entry at
// once.
func (s *Server) registerServer(ctx context.Context, cli *clientv3.Client, info api.ServerInfo) {
	b, _ := json.Marshal(info)
	key := serversPrefix + info.Name
	pol := backoff.Policy{Base: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(serverTTL), concurrency.WithContext(ctx))
		if err == nil {
			if _, err = cli.Put(ctx, key, string(b), clientv3.WithLease(sess.Lease())); err == nil {
				attempt = 0
				select {
				case <-ctx.Done():
				case <-sess.Done():
					err = errors.New("lease lost")
				}
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = cli.Revoke(rctx, sess.Lease())
			cancel()
			sess.Orphan()
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("server registration lost; registering again", "err", err)
		if !clock.Sleep(ctx, s.clock, pol.Delay(attempt)) {
			return
		}
	}
}

// listServers returns the running servers, sorted by name.
func listServers(ctx context.Context, cli *clientv3.Client) ([]api.ServerInfo, error) {
	resp, err := cli.Get(ctx, serversPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	out := make([]api.ServerInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var si api.ServerInfo
		if json.Unmarshal(kv.Value, &si) == nil {
			out = append(out, si)
		}
	}
	slices.SortFunc(out, func(a, b api.ServerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// clusterStatus reads the servers, the controllers' leader and, for the
// embedded etcd, its members and raft leader.
func clusterStatus(ctx context.Context, db *etcdConn) (*api.ClusterStatus, error) {
	st := &api.ClusterStatus{}
	var err error
	if st.Servers, err = listServers(ctx, db.client); err != nil {
		return nil, err
	}
	if st.Leader, err = controllers.Leader(ctx, db.client); err != nil {
		return nil, err
	}
	if db.member == nil {
		return st, nil
	}
	members, err := db.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	lead := uint64(db.member.Server.Leader())
	for _, m := range members.Members {
		st.Members = append(st.Members, api.EtcdMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, Learner: m.IsLearner})
		if m.ID == lead {
			st.EtcdLeader = m.Name
		}
	}
	return st, nil
}

// clusterRoutes are the control plane's own routes: the cluster's view
// (every role reads it), joining, snapshots and a peer's GC round (admins,
// that is other servers, only: every POST is a write).
func (s *Server) clusterRoutes(db *etcdConn, p *parts) []apiserver.Route {
	return []apiserver.Route{
		{Pattern: "GET /v1/cluster", Resource: "cluster", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st, err := clusterStatus(r.Context(), db)
			if err != nil {
				writeAPIError(w, s.log, unavailable("%v", err))
				return
			}
			writeJSONBody(w, http.StatusOK, st)
		})},
		{Pattern: "POST /v1/cluster/members", Resource: "cluster", Handler: s.handleJoin(db)},
		{Pattern: "POST /v1/cluster/snapshot", Resource: "cluster", Handler: s.handleSnapshot(db, p)},
		{Pattern: "POST /v1/cluster/gc", Resource: "cluster", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, err := collectImagesOnce(r.Context(), p.store, p.images)
			if err != nil {
				writeAPIError(w, s.log, unavailable("registry GC: %v", err))
				return
			}
			writeJSONBody(w, http.StatusOK, res)
		})},
	}
}

// peers reaches the cluster's other servers: their list from etcd, and an
// HTTP client that trusts the cluster CA and presents the admin token (a
// server holds the cluster's keys: among servers it is no escalation).
// setAuth is called once, before the server serves.
type peers struct {
	self string
	cli  *clientv3.Client

	mu    sync.Mutex
	http  *http.Client
	token string
}

// setAuth gives the peers' client its trust and token.
func (p *peers) setAuth(caPEM []byte, token string) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("peers: the cluster CA holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.http, p.token = &http.Client{Transport: tr}, token
	return nil
}

// list returns the other running servers, sorted by name.
func (p *peers) list(ctx context.Context) ([]api.ServerInfo, error) {
	all, err := listServers(ctx, p.cli)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(si api.ServerInfo) bool { return si.Name == p.self }), nil
}

// do sends a request to a peer, marked as a server's own (replicaHeader),
// so that the peer answers from what it holds and forwards nothing.
func (p *peers) do(ctx context.Context, method, url string, body io.Reader, header http.Header) (*http.Response, error) {
	p.mu.Lock()
	hc, token := p.http, p.token
	p.mu.Unlock()
	if hc == nil {
		return nil, errors.New("peers: not ready")
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(replicaHeader, "1")
	return hc.Do(req)
}

// peerReadyTimeout bounds asking a peer whether it serves.
const peerReadyTimeout = 500 * time.Millisecond

// ready reports whether the server at base answers /readyz: its API is up
// and its etcd member reads through the quorum.
func (p *peers) ready(ctx context.Context, base string) bool {
	rctx, cancel := context.WithTimeout(ctx, peerReadyTimeout)
	defer cancel()
	resp, err := p.do(rctx, http.MethodGet, base+"/readyz", nil, nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// close drops the client's idle connections.
func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.http != nil {
		p.http.CloseIdleConnections()
	}
}

// etcdLeaderCheck is how often the controllers' leader looks whether it
// also leads etcd, besides when etcd's leader changes.
const etcdLeaderCheck = time.Second

// keepEtcdLeaderAway runs on the controllers' leader: whenever its own
// etcd member leads raft, it hands raft's leadership to another running
// voting member. A server that leads both, when killed, makes etcd elect a
// leader, and a new etcd leader extends every lease — the controllers'
// election's too — by a full TTL and an election timeout: the hand-over
// would take twice as long. Moving raft's leadership costs a few
// milliseconds of writes.
func (s *Server) keepEtcdLeaderAway(e *embed.Etcd, cli *clientv3.Client, ps *peers) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		tick := s.clock.NewTicker(etcdLeaderCheck)
		defer tick.Stop()
		// The first look waits a check's period: a transfer makes the
		// reads and writes in flight fail, and a new term's first ones
		// (the autoscaler's first decision) matter most.
		for {
			changed := e.Server.LeaderChangedNotify()
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			case <-tick.Chan():
			}
			if e.Server.Leader() == e.Server.MemberID() {
				s.moveEtcdLeader(ctx, e, cli, ps)
			}
		}
	}
}

// moveEtcdLeader hands raft's leadership to a voting member whose server
// answers /readyz, trying them in turn. A transfer to a member that is
// gone would hold etcd's writes for an election timeout before raft gives
// it up; a server killed a moment ago is still listed for its lease's
// TTL, but answers nothing.
func (s *Server) moveEtcdLeader(ctx context.Context, e *embed.Etcd, cli *clientv3.Client, ps *peers) {
	running, err := listServers(ctx, cli)
	if err != nil {
		return
	}
	self := e.Server.MemberID()
	for _, m := range e.Server.Cluster().Members() {
		i := slices.IndexFunc(running, func(si api.ServerInfo) bool { return si.MemberID == m.ID.String() })
		if m.ID == self || m.IsLearner || i < 0 || !ps.ready(ctx, running[i].APIURL) {
			continue
		}
		// At most about an election timeout: raft gives up a transfer to
		// a member that does not answer after one.
		mctx, cancel := context.WithTimeout(ctx, 2*etcdElectionTimeout)
		err := e.Server.MoveLeader(mctx, uint64(self), uint64(m.ID))
		cancel()
		if err == nil {
			s.log.Info("moved etcd's leadership off the controllers' leader", "to", m.Name)
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("could not move etcd's leadership", "to", m.Name, "err", err)
	}
}
