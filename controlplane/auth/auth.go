// Package auth keeps the API's bearer tokens in etcd and says what each
// role may do.
//
// A token is "ID.SECRET". etcd holds, under /surge/v1/tokens/ID, the role and
// the SHA-256 of SECRET, never the secret itself, so a copy of etcd's data
// grants nothing. SECRET has 256 bits of entropy, which is why a plain hash
// (rather than a slow password hash) is enough.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/internal/clock"
)

// Role is what a token may do.
type Role string

// Roles. Every role may read; only some may write.
const (
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
	// RoleViewer may only read.
	RoleViewer Role = "viewer"
	// RoleNode is a node's. A node-role token is the cluster's join
	// token, which only obtains a node's client certificate; with that
	// certificate the node reads what it needs and writes its own Node,
	// lease and replicas' status (see Allowed).
	RoleNode Role = "node"
	// RoleGateway is a gateway's: it reads, and reports traffic statistics.
	RoleGateway Role = "gateway"
	// RoleMetrics is a scraper's (Prometheus): it reads metrics, from the
	// API and from every role's metrics endpoint off loopback, and the
	// discovery of those endpoints; nothing else.
	RoleMetrics Role = "metrics"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleViewer, RoleNode, RoleGateway, RoleMetrics}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	for _, v := range Roles {
		if r == v {
			return true
		}
	}
	return false
}

// Token is what is stored of a token.
type Token struct {
	ID          string    `json:"id"`
	Role        Role      `json:"role"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	// Hash is the hex SHA-256 of the secret.
	Hash string `json:"hash,omitempty"`
	// Revision is the etcd revision that wrote the token (tokens are
	// never changed, only made and revoked): WaitRevoked watches from
	// there, so no revocation after the token was read slips by.
	Revision int64 `json:"-"`
}

// ErrInvalidToken is returned for a token that is malformed, unknown or wrong.
var ErrInvalidToken = errors.New("auth: invalid token")

// ErrLastAdmin refuses to revoke the only admin token left: without one,
// nobody could make tokens again.
var ErrLastAdmin = errors.New("auth: the last admin token")

const tokenPrefix = "/surge/v1/tokens/"

// Store keeps tokens in etcd.
type Store struct {
	c     *clientv3.Client
	clock clock.Clock
}

// NewStore returns a token store on an etcd client. clk stamps the tokens'
// creation times; nil is the wall clock.
func NewStore(c *clientv3.Client, clk clock.Clock) *Store {
	return &Store{c: c, clock: clock.Or(clk)}
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Create makes a new token and returns it whole; only its hash is kept.
func (s *Store) Create(ctx context.Context, role Role, description string) (string, Token, error) {
	if !role.Valid() {
		return "", Token{}, fmt.Errorf("unknown role %q", role)
	}
	var idb [6]byte
	var sec [32]byte
	_, _ = rand.Read(idb[:])
	_, _ = rand.Read(sec[:])
	id := hex.EncodeToString(idb[:])
	secret := base64.RawURLEncoding.EncodeToString(sec[:])
	t := Token{ID: id, Role: role, Description: description, Created: s.clock.Now().UTC().Truncate(time.Second), Hash: hashSecret(secret)}
	b, _ := json.Marshal(t)
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tokenPrefix+id), "=", 0)).
		Then(clientv3.OpPut(tokenPrefix+id, string(b))).Commit()
	if err != nil {
		return "", Token{}, fmt.Errorf("create token: %w", err)
	}
	if !resp.Succeeded {
		return "", Token{}, fmt.Errorf("create token: id %s is taken", id)
	}
	t.Hash, t.Revision = "", resp.Header.Revision
	return id + "." + secret, t, nil
}

// Authenticate returns the stored token a bearer string names, or
// ErrInvalidToken.
func (s *Store) Authenticate(ctx context.Context, bearer string) (Token, error) {
	id, secret, ok := strings.Cut(bearer, ".")
	if !ok || len(id) != 12 || secret == "" || strings.ContainsAny(id, "/") {
		return Token{}, ErrInvalidToken
	}
	resp, err := s.c.Get(ctx, tokenPrefix+id)
	if err != nil {
		return Token{}, fmt.Errorf("authenticate: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Token{}, ErrInvalidToken
	}
	var t Token
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return Token{}, fmt.Errorf("authenticate: decode token %s: %w", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hashSecret(secret))) != 1 {
		return Token{}, ErrInvalidToken
	}
	t.Hash, t.Revision = "", resp.Kvs[0].ModRevision
	return t, nil
}

// List returns every token, without hashes.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	resp, err := s.c.Get(ctx, tokenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]Token, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t Token
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		t.Hash = ""
		out = append(out, t)
	}
	return out, nil
}

// Delete revokes a token; it reports whether one existed. It refuses,
// with ErrLastAdmin, to revoke the only admin token: the check and the
// delete are one transaction, so two revocations at once cannot remove
// the last two.
func (s *Store) Delete(ctx context.Context, id string) (bool, error) {
	if strings.ContainsAny(id, "/") || id == "" {
		return false, nil
	}
	for {
		resp, err := s.c.Get(ctx, tokenPrefix, clientv3.WithPrefix())
		if err != nil {
			return false, fmt.Errorf("revoke token %s: %w", id, err)
		}
		var target *Token
		var admins []clientv3.Cmp
		for _, kv := range resp.Kvs {
			var t Token
			if err := json.Unmarshal(kv.Value, &t); err != nil {
				return false, fmt.Errorf("revoke token %s: %w", id, err)
			}
			if t.Role == RoleAdmin {
				admins = append(admins, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
			}
			if string(kv.Key) == tokenPrefix+id {
				target = &t
			}
		}
		switch {
		case target == nil:
			return false, nil
		case target.Role == RoleAdmin && len(admins) <= 1:
			return false, ErrLastAdmin
		}
		// Every admin token read must still be there, unchanged: else
		// read again.
		cmps := admins
		if target.Role != RoleAdmin {
			cmps = nil
		}
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(tokenPrefix+id), ">", 0))
		txn, err := s.c.Txn(ctx).If(cmps...).Then(clientv3.OpDelete(tokenPrefix + id)).Commit()
		if err != nil {
			return false, fmt.Errorf("revoke token %s: %w", id, err)
		}
		if txn.Succeeded {
			return true, nil
		}
	}
}

// WaitRevoked blocks until the token id, read at revision rev
// (Token.Revision), is revoked, and returns nil; or until ctx ends, and
// returns its error. It watches etcd, so every API server sees a
// revocation as soon as etcd tells it, whichever server revoked. When the
// watch fails (etcd lost its leader, the server lost etcd) it returns nil
// too: a token that cannot be vouched for is as good as revoked, and the
// caller's client comes back and authenticates again.
func (s *Store) WaitRevoked(ctx context.Context, id string, rev int64) error {
	key := tokenPrefix + id
	from := rev
	for {
		compacted, err := s.watchDeletes(ctx, key, from)
		if err != nil || !compacted {
			return err
		}
		// etcd compacted past the revision watched from (auto-compaction
		// does this to every long watch): read the token again, and watch
		// on from that read if it is still the one authenticated.
		resp, err := s.c.Get(clientv3.WithRequireLeader(ctx), key)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev:
			return nil
		}
		from = resp.Header.Revision
	}
}

// watchDeletes watches key from revision from+1 until it is deleted
// (nil), ctx ends (its error) or the watch fails (nil); compacted reports
// that it failed because etcd compacted past from.
func (s *Store) watchDeletes(ctx context.Context, key string, from int64) (compacted bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.c.Watch(wctx, key, clientv3.WithRev(from+1), clientv3.WithFilterPut()) {
		if resp.CompactRevision != 0 {
			return true, nil
		}
		if resp.Err() != nil {
			break
		}
		if len(resp.Events) > 0 {
			return false, nil
		}
	}
	return false, ctx.Err()
}
