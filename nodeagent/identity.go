package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// A node's identity is its client certificate from the control plane's
// node CA, as a kubelet's: the agent trades the cluster's join token for
// it once (client.Bootstrap), keeps it in its state dir, authenticates to
// the API with it alone, and renews it while it runs. A restarted agent
// reuses it; one whose certificate has expired, or that the API no longer
// accepts, joins again with the join token.

// identityDir holds the node's client certificate and key, under the
// agent's state dir.
const identityDir = "identity"

// renewBackoff paces attempts to renew a certificate while the API does
// not answer; there is a third of the certificate's life to do it in.
var renewBackoff = backoff.Policy{Base: time.Second, Max: time.Minute, Jitter: 0.5}

// RenewAt is when a certificate is renewed: at two thirds of its life, as
// kubelet does (between 70% and 90%), leaving a third of it (8 hours of a
// day's certificate) to reach the API.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// certKeeper keeps one certificate current: get returns the one in use,
// and run renews it at RenewAt, trying again with back-off until it gets a
// new one. get is called from TLS handshakes, concurrently, and does not
// block.
type certKeeper struct {
	what  string
	clock clock.Clock
	log   *slog.Logger
	// renew gets a new certificate; it blocks on the API.
	renew func(ctx context.Context) (tls.Certificate, error)
	// save, when set, keeps a new certificate on disk.
	save func(tls.Certificate) error
	// changed, when set, learns that a new certificate is in use: a
	// connection keeps the certificate it was made with, so the clients
	// that present it close theirs.
	changed func()
	cur     atomic.Pointer[tls.Certificate]
}

func (k *certKeeper) get() *tls.Certificate { return k.cur.Load() }

// set makes c the certificate in use, saving it first when the keeper
// keeps its certificate on disk.
func (k *certKeeper) set(c tls.Certificate) error {
	if k.save != nil {
		if err := k.save(c); err != nil {
			return err
		}
	}
	k.cur.Store(&c)
	if k.changed != nil {
		k.changed()
	}
	return nil
}

// run renews the certificate at RenewAt, every time, until ctx ends.
func (k *certKeeper) run(ctx context.Context) {
	for {
		c := k.get()
		if c == nil || !clock.Sleep(ctx, k.clock, RenewAt(c.Leaf).Sub(k.clock.Now())) {
			return
		}
		err := backoff.Retry(ctx, k.clock, renewBackoff, func(ctx context.Context) error {
			n, err := k.renew(ctx)
			if err == nil {
				err = k.set(n)
			}
			if err != nil && ctx.Err() == nil {
				k.log.Warn("renew "+k.what, "err", err, "expires", c.Leaf.NotAfter)
			}
			return err
		})
		if err != nil {
			return // ctx ended
		}
		k.log.Info("renewed "+k.what, "expires", k.get().Leaf.NotAfter)
	}
}

// identity is a node's credential towards the API.
type identity struct {
	node    string
	address netip.Addr
	dir     string
	// join is a client with the join token, for bootstrap.
	join *client.Client
	// api is the client that authenticates with the certificate.
	api  *client.Client
	cert certKeeper
}

// startIdentity returns the node's identity and the API client that
// authenticates with it: the certificate kept under stateDir when it is
// this node's and the API accepts it, or else a new one obtained with the
// join token that o.Client carries. The caller runs id.cert.run.
func startIdentity(ctx context.Context, o Options) (*identity, error) {
	addr, err := netip.ParseAddr(o.Agent.Address)
	if err != nil {
		return nil, fmt.Errorf("node address %q: want an IP address", o.Agent.Address)
	}
	join, err := client.New(&o.Client)
	if err != nil {
		return nil, err
	}
	id := &identity{node: o.Agent.NodeName, address: addr.Unmap(), dir: filepath.Join(o.Containers.StateDir, identityDir), join: join}
	id.cert = certKeeper{what: "node certificate", clock: o.Clock, log: o.Log.With("component", "identity"),
		save: id.save, renew: id.renew}
	if id.api, err = client.NewWithCertificate(&o.Client, id.cert.get); err != nil {
		return nil, err
	}
	id.cert.changed = id.api.CloseConnections
	if c, ok := id.load(o.Clock.Now()); ok {
		id.cert.cur.Store(&c)
		err := id.check(ctx)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, api.ErrUnauthorized) {
			return nil, fmt.Errorf("node %s: check its certificate with the API: %w", id.node, err)
		}
		id.cert.log.Warn("the API does not accept the node's certificate: joining again with the join token", "err", err)
	}
	c, err := client.Bootstrap(ctx, join, id.node, id.address.String())
	if err != nil {
		return nil, fmt.Errorf("join the cluster as node %s at %s: %w", id.node, id.address, err)
	}
	if err := id.cert.set(c); err != nil {
		return nil, err
	}
	id.cert.log.Info("joined the cluster: node certificate issued", "node", id.node, "address", id.address, "expires", c.Leaf.NotAfter)
	return id, nil
}

// check asks the API who the certificate makes the agent.
func (id *identity) check(ctx context.Context) error {
	var who struct {
		Node string `json:"node"`
	}
	if err := id.api.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		return err
	}
	if who.Node != id.node {
		return fmt.Errorf("the API takes the certificate for node %q: %w", who.Node, api.ErrUnauthorized)
	}
	return nil
}

// renew gets a new client certificate with the current one, or, when the
// API no longer accepts that (it expired while the agent was stopped or
// cut off), with the join token.
func (id *identity) renew(ctx context.Context) (tls.Certificate, error) {
	c, err := client.RequestCertificate(ctx, id.api, id.node, api.UsageClient)
	if errors.Is(err, api.ErrUnauthorized) {
		return client.Bootstrap(ctx, id.join, id.node, id.address.String())
	}
	return c, err
}

// load reads the kept certificate; it is good when it is this node's, at
// its address, and not expired.
func (id *identity) load(now time.Time) (tls.Certificate, bool) {
	certPEM, err := os.ReadFile(filepath.Join(id.dir, "node.crt"))
	if err != nil {
		return tls.Certificate{}, false
	}
	keyPEM, err := os.ReadFile(filepath.Join(id.dir, "node.key"))
	if err != nil {
		return tls.Certificate{}, false
	}
	c, err := client.ParseKeyPair(certPEM, keyPEM)
	if err != nil || c.Leaf.Subject.CommonName != api.NodeCommonName(id.node) || !now.Before(c.Leaf.NotAfter) ||
		len(c.Leaf.IPAddresses) != 1 || !c.Leaf.IPAddresses[0].Equal(id.address.AsSlice()) {
		return tls.Certificate{}, false
	}
	return c, true
}

// save keeps the certificate and its key, the key readable by the agent
// only.
func (id *identity) save(c tls.Certificate) error {
	certPEM, keyPEM, err := client.EncodeKeyPair(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(id.dir, 0o700); err != nil {
		return fmt.Errorf("keep node certificate: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(id.dir, "node.key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(id.dir, "node.crt"), certPEM, 0o644)
}

// close lets the identity's clients' idle connections go.
func (id *identity) close() {
	closeIdleConnections(id.join)
	closeIdleConnections(id.api)
}

// writeFileAtomic writes a file through a temporary one and a rename, so
// that a crash leaves the old content or the new, never half of either.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
