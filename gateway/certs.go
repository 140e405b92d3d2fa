package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// The gateway's certificates. A handshake picks one by the name the
// client asks for (SNI): a certificate naming it exactly, else one whose
// wildcard covers it (RFC 6125 §6.4.3: "*" stands for the first label
// only, so *.example.com covers a.example.com and not a.b.example.com),
// else the default one. They come from three sources, in this order of
// preference for a name two of them cover:
//
//   - Config.TLSCertFile and TLSKeyFile: one pair, the default certificate;
//   - Config.TLSDir: every NAME.crt with its NAME.key beside it, each
//     serving the names its certificate lists (its subject alternative
//     names; the file's name does not matter);
//   - a CertIssuer (Deps.CertIssuer; `surge up` signs with its gateway
//     CA): a certificate for the domain, *.DOMAIN, and one per namespace,
//     *.NAMESPACE.DOMAIN, asked for as the namespace's first function
//     appears in the routing table.
//
// Among certificates of one source for one name, the one that expires
// last wins, and one whose key type the client supports beats one whose
// it does not (an ECDSA and an RSA certificate for one name).
//
// Files are looked at every Config.TLSReloadInterval, by polling their
// size, modification time and inode (after symlinks), rather than by
// inotify: a poll sees a file replaced by a rename, a symlink swapped
// (Kubernetes' secret volumes swap a ..data link), and an editor's
// write-and-rename alike, where inotify watches a file that is gone after
// the first rename, and a fake clock drives it in tests. A second's poll
// of a few files costs a few stat calls. A pair that changed is loaded
// and checked (key matches certificate, valid now, for servers); a bad
// one is logged once, as one error naming the file, and the certificate
// it would have replaced goes on serving. Issued certificates are asked
// for again when two thirds of their life has passed.

// CertIssuer makes certificates for the gateway's own names, for a
// gateway that has no files for them: `surge up`'s signs with its
// gateway CA.
type CertIssuer interface {
	// IssueCertificate returns a certificate with its key for the names
	// of namespace: "" for the domain itself (*.DOMAIN, and whatever
	// other names the issuer's gateway answers to, such as localhost),
	// else *.NAMESPACE.DOMAIN. It may block (it signs, and may keep the
	// certificate on disk); it is called from the gateway's certificate
	// loop, and from a handshake's goroutine for a namespace the loop
	// has not got to yet.
	IssueCertificate(ctx context.Context, namespace string) (*tls.Certificate, error)
}

// ErrNoCertificate is matched by the error of a handshake for which the
// gateway has no certificate at all.
var ErrNoCertificate = errors.New("gateway: no certificate")

// Source ranks: a user's files before what an issuer signed.
const (
	rankFile = iota
	rankDir
	rankIssued
)

// certTable is one immutable view of the certificates, which handshakes
// read with one atomic load.
type certTable struct {
	// byName holds each certificate under every name it certifies, in
	// lowercase without a final dot ("*.example.com" for a wildcard; an
	// IP address in its canonical form), best first.
	byName map[string][]*tls.Certificate
	def    *tls.Certificate
}

// fileStamp identifies one version of a file; the zero value is a file
// that is missing.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = uint64(st.Ino)
	}
	return s, nil
}

// pair is one certificate file and its key file, as last looked at.
type pair struct {
	certPath, keyPath string
	rank              int
	stamp             [2]fileStamp
	cert              *tls.Certificate // the one serving; nil while none loaded
	failed            string           // the last load's error, logged once
}

// issued is the certificate an issuer made for a namespace.
type issued struct {
	cert   *tls.Certificate
	failed string // the last issue's error, logged once
}

// certStore is the gateway's certificates: a table that handshakes read,
// and the loop that keeps it up to date.
type certStore struct {
	certFile, keyFile, dir string
	interval               time.Duration
	domain                 string
	issuer                 CertIssuer
	routes                 *Routes
	clock                  clock.Clock
	log                    *slog.Logger
	m                      *tlsMetrics // nil: none

	table atomic.Pointer[certTable]

	mu      sync.Mutex // guards what follows: the loop's, and handshakes' issuing
	static  *pair
	pairs   map[string]*pair   // the directory's, by certificate path
	issued  map[string]*issued // by namespace, "" for the domain
	seen    *Table             // the routing table the loop last looked at
	dirFail string             // the last directory listing's error, logged once
}

func newCertStore(cfg *Config, issuer CertIssuer, routes *Routes, clk clock.Clock, log *slog.Logger) *certStore {
	return &certStore{
		certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, dir: cfg.TLSDir,
		interval: cfg.TLSReloadInterval, domain: cfg.Domain,
		issuer: issuer, routes: routes, clock: clk, log: log,
		pairs: map[string]*pair{}, issued: map[string]*issued{},
	}
}

// load reads every certificate for the first time. The default pair
// (TLSCertFile) must load, and the gateway must end up with at least one
// certificate; a bad pair of the directory is logged and left out, as a
// reload would, so that one expired file among many does not keep the
// gateway from serving the others.
func (s *certStore) load(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.certFile != "" {
		s.static = &pair{certPath: s.certFile, keyPath: s.keyFile, rank: rankFile}
		if err := s.static.reload(now); err != nil {
			return fmt.Errorf("gateway TLS: %w", err)
		}
	}
	if s.dir != "" {
		if _, err := os.ReadDir(s.dir); err != nil {
			return fmt.Errorf("gateway TLS: --tls-dir: %w", err)
		}
		s.reloadDir(now)
	}
	if s.issuer != nil {
		if err := s.issue(ctx, ""); err != nil {
			return fmt.Errorf("gateway TLS: %w", err)
		}
		s.issueNamespaces(ctx, now)
	}
	s.publish()
	if s.table.Load().def == nil {
		return fmt.Errorf("gateway TLS: %w: give --tls-cert and --tls-key, or --tls-dir with NAME.crt and NAME.key pairs", ErrNoCertificate)
	}
	return nil
}

// run looks at the files, the issued certificates and the routing table
// every interval until ctx ends.
func (s *certStore) run(ctx context.Context) {
	t := s.clock.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		s.refresh(ctx)
	}
}

// refresh is one round of run.
func (s *certStore) refresh(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	changed := false
	if s.static != nil {
		changed = s.logged(s.static, s.static.reload(now)) || changed
	}
	if s.dir != "" {
		changed = s.reloadDir(now) || changed
	}
	if s.issuer != nil {
		changed = s.renewIssued(ctx, now) || changed
		changed = s.issueNamespaces(ctx, now) || changed
	}
	if changed {
		s.publish()
	}
}

// errUnchanged is reload's answer for files it has seen already.
var errUnchanged = errors.New("unchanged")

// reload loads p's files if they changed since it last looked, and
// reports what came of it: nil for a new certificate in place,
// errUnchanged, or why the files were not taken (the old certificate, if
// any, stays).
func (p *pair) reload(now time.Time) error {
	cs, cerr := stampOf(p.certPath)
	ks, kerr := stampOf(p.keyPath)
	st := [2]fileStamp{cs, ks}
	if st == p.stamp && (p.cert != nil || p.failed != "") {
		return errUnchanged
	}
	p.stamp = st
	var err error
	switch {
	case cerr != nil:
		err = fmt.Errorf("certificate %w", cerr)
	case kerr != nil:
		err = fmt.Errorf("key of %s: %w", p.certPath, kerr)
	default:
		var c *tls.Certificate
		if c, err = loadPair(p.certPath, p.keyPath, now); err == nil {
			p.cert, p.failed = c, ""
			return nil
		}
	}
	return err
}

// logged logs err, a pair's reload error, once per version of its files,
// and reports whether the pair's certificate changed.
func (s *certStore) logged(p *pair, err error) bool {
	switch {
	case err == nil:
		s.log.Info("gateway TLS certificate loaded", "file", p.certPath, "names", certNames(p.cert.Leaf), "expires", p.cert.Leaf.NotAfter)
		return true
	case errors.Is(err, errUnchanged):
		return false
	}
	if msg := err.Error(); msg != p.failed {
		p.failed = msg
		if s.m != nil {
			s.m.errors.Inc()
		}
		if p.cert != nil {
			s.log.Error("gateway TLS certificate not reloaded; the one loaded before goes on serving", "file", p.certPath, "err", err)
		} else {
			s.log.Error("gateway TLS certificate not loaded; its names are not served", "file", p.certPath, "err", err)
		}
	}
	return false
}

// reloadDir looks at every pair in the directory, and reports whether
// any certificate changed: loaded, replaced, or gone with its files.
func (s *certStore) reloadDir(now time.Time) bool {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		// A directory that cannot be read keeps what it had.
		if msg := err.Error(); msg != s.dirFail {
			s.dirFail = msg
			s.log.Error("gateway TLS directory not read; the certificates loaded before go on serving", "dir", s.dir, "err", err)
		}
		return false
	}
	s.dirFail = ""
	changed := false
	found := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".crt") || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		path := filepath.Join(s.dir, name)
		found[path] = true
		p := s.pairs[path]
		if p == nil {
			p = &pair{certPath: path, keyPath: strings.TrimSuffix(path, ".crt") + ".key", rank: rankDir}
			s.pairs[path] = p
		}
		changed = s.logged(p, p.reload(now)) || changed
	}
	for path, p := range s.pairs {
		if !found[path] {
			delete(s.pairs, path)
			if p.cert != nil {
				s.log.Info("gateway TLS certificate removed with its file", "file", path)
				changed = true
			}
		}
	}
	return changed
}

// issue asks the issuer for namespace's certificate and keeps it. Called
// with mu held.
func (s *certStore) issue(ctx context.Context, ns string) error {
	is := s.issued[ns]
	if is == nil {
		is = &issued{}
		s.issued[ns] = is
	}
	c, err := s.issuer.IssueCertificate(ctx, ns)
	if err == nil && c.Leaf == nil {
		c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
	}
	if err != nil {
		err = fmt.Errorf("issue the certificate of namespace %q: %w", ns, err)
		if msg := err.Error(); msg != is.failed {
			is.failed = msg
			if s.m != nil {
				s.m.errors.Inc()
			}
			s.log.Error("gateway TLS certificate not issued", "namespace", ns, "err", err)
		}
		return err
	}
	is.cert, is.failed = c, ""
	return nil
}

// renewIssued asks again for the issued certificates two thirds through
// their life, and reports whether any changed.
func (s *certStore) renewIssued(ctx context.Context, now time.Time) bool {
	changed := false
	for ns, is := range s.issued {
		if is.cert == nil || now.Before(renewAt(is.cert.Leaf)) {
			continue
		}
		old := is.cert
		if s.issue(ctx, ns) == nil && is.cert != old {
			changed = true
		}
	}
	return changed
}

// renewAt is two thirds through c's life.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// issueNamespaces asks for the certificate of every namespace the routing
// table has a function in and the store has none for, and reports
// whether it got any. It looks only when the table changed.
func (s *certStore) issueNamespaces(ctx context.Context, now time.Time) bool {
	t := s.routes.Load()
	if t == s.seen {
		return false
	}
	s.seen = t
	changed := false
	for _, fr := range t.routes {
		ns := fr.key.Namespace
		if is := s.issued[ns]; is != nil && is.cert != nil {
			continue // renewIssued renews it
		}
		if s.issue(ctx, ns) == nil {
			changed = true
		}
	}
	return changed
}

// publish builds a new table from what the store holds. Called with mu
// held.
func (s *certStore) publish() {
	type entry struct {
		c    *tls.Certificate
		rank int
		name string // for the metrics: the file, or the namespace issued for
	}
	var all []entry
	if s.static != nil && s.static.cert != nil {
		all = append(all, entry{s.static.cert, rankFile, s.static.certPath})
	}
	for _, path := range slices.Sorted(maps.Keys(s.pairs)) {
		if c := s.pairs[path].cert; c != nil {
			all = append(all, entry{c, rankDir, path})
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(s.issued)) {
		if c := s.issued[ns].cert; c != nil {
			all = append(all, entry{c, rankIssued, "issued:" + ns})
		}
	}
	if s.m != nil {
		s.m.notAfter.Reset()
		for _, e := range all {
			s.m.notAfter.WithLabelValues(e.name).Set(float64(e.c.Leaf.NotAfter.Unix()))
		}
	}
	t := &certTable{byName: map[string][]*tls.Certificate{}}
	ranks := map[*tls.Certificate]int{}
	for _, e := range all {
		ranks[e.c] = e.rank
		for _, n := range certNames(e.c.Leaf) {
			t.byName[n] = append(t.byName[n], e.c)
		}
	}
	for _, list := range t.byName {
		slices.SortStableFunc(list, func(a, b *tls.Certificate) int {
			return cmp.Or(cmp.Compare(ranks[a], ranks[b]), b.Leaf.NotAfter.Compare(a.Leaf.NotAfter))
		})
	}
	// The default: the default pair, else the domain's issued
	// certificate, else the directory's first.
	switch {
	case s.static != nil && s.static.cert != nil:
		t.def = s.static.cert
	case s.issued[""] != nil && s.issued[""].cert != nil:
		t.def = s.issued[""].cert
	case len(all) > 0:
		t.def = all[0].c
	}
	s.table.Store(t)
}

// certNames is every name c certifies, as certTable keys them.
func certNames(c *x509.Certificate) []string {
	names := make([]string, 0, len(c.DNSNames)+len(c.IPAddresses))
	for _, n := range c.DNSNames {
		names = append(names, strings.TrimSuffix(strings.ToLower(n), "."))
	}
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// getCertificate is the TLS configuration's GetCertificate: it runs on
// the handshake's goroutine, once per full handshake (a resumed session
// takes none).
func (s *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	t := s.table.Load()
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	if name == "" {
		// No SNI (a client that dialed an address): the certificate of
		// the address it dialed, if there is one.
		if a, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
			name = a.IP.String()
		}
	}
	if c := t.pick(name, hello); c != nil {
		return c, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := t.pick("*"+name[i:], hello); c != nil {
			return c, nil
		}
	}
	if c := s.issueFor(hello.Context(), name); c != nil {
		return c, nil
	}
	if t.def != nil {
		return t.def, nil
	}
	return nil, fmt.Errorf("%w for %q", ErrNoCertificate, name)
}

// pick returns the best certificate for name that the client supports,
// else the best one, else nil.
func (t *certTable) pick(name string, hello *tls.ClientHelloInfo) *tls.Certificate {
	list := t.byName[name]
	for _, c := range list {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	if len(list) > 0 {
		return list[0]
	}
	return nil
}

// issueFor issues, during a handshake, the certificate of the namespace
// of name (NAME.NAMESPACE.DOMAIN) when the loop has not yet: only for a
// namespace with a routed function, so that a client cannot make the
// gateway sign for names it made up.
func (s *certStore) issueFor(ctx context.Context, name string) *tls.Certificate {
	if s.issuer == nil {
		return nil
	}
	rest, ok := strings.CutSuffix(name, "."+s.domain)
	if !ok {
		return nil
	}
	_, ns, ok := strings.Cut(rest, ".")
	if !ok || ns == "" || strings.Contains(ns, ".") || !s.routed(ns) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if is := s.issued[ns]; is == nil || is.cert == nil {
		if s.issue(ctx, ns) != nil {
			return nil
		}
		s.publish()
	}
	return s.issued[ns].cert
}

// routed reports whether a function of namespace ns is in the routing
// table.
func (s *certStore) routed(ns string) bool {
	for _, fr := range s.routes.Load().routes {
		if fr.key.Namespace == ns {
			return true
		}
	}
	return false
}

// loadPair reads a certificate (with its chain) and its key, PEM, and
// checks that they match, that the certificate is valid at now, and that
// it may serve.
func loadPair(certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certificate %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("key of %s: %w", certPath, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s with key %s: %w", certPath, keyPath, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
		c.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s: certificate expired at %s", certPath, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("%s: certificate not valid before %s", certPath, leaf.NotBefore.UTC().Format(time.RFC3339))
	case len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny):
		return nil, fmt.Errorf("%s: certificate is not for servers (its extended key usage lacks serverAuth)", certPath)
	case len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0:
		return nil, fmt.Errorf("%s: certificate names no host (no subject alternative name)", certPath)
	}
	return &c, nil
}
