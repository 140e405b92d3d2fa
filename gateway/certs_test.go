package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// fakeIssuer signs with a test CA what a gateway asks for, as surge up's
// issuer does with its gateway CA: *.surge.localhost and localhost for
// the domain, *.NAMESPACE.surge.localhost for a namespace. Its
// certificates live for life, from the issuer's clock.
type fakeIssuer struct {
	t     *testing.T
	ca    *testCA
	clock clock.Clock
	life  time.Duration

	mu    sync.Mutex
	calls []string
}

var _ CertIssuer = (*fakeIssuer)(nil)

func (f *fakeIssuer) IssueCertificate(_ context.Context, ns string) (*tls.Certificate, error) {
	f.mu.Lock()
	f.calls = append(f.calls, ns)
	n := len(f.calls)
	f.mu.Unlock()
	names := []string{"*.surge.localhost", "localhost"}
	cn := "surge.localhost"
	if ns != "" {
		names, cn = []string{"*." + ns + ".surge.localhost"}, ns
	}
	now := f.clock.Now()
	return f.ca.tlsCert(f.t, leaf{cn: fmt.Sprintf("%s#%d", cn, n), names: names, notBefore: now, notAfter: now.Add(f.life)}), nil
}

func (f *fakeIssuer) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// routeNamespace routes a function fn of namespace ns, with no replica.
func routeNamespace(u Updater, ns, fn string) {
	u.Update(func(s *State) {
		s.SetFunction(FunctionInfo{Namespace: ns, Name: fn, DefaultRevision: fn + "-00001"})
		s.SetRevision(RevisionInfo{Namespace: ns, Name: fn + "-00001", Function: fn, Number: 1})
	})
}

// TestIssuedCertificatesPerNamespace: a gateway with an issuer and no
// files serves the domain's certificate at once, asks for a namespace's
// as its first function appears (in the loop, or at the first handshake
// for it if that comes first), never for a namespace no function is in,
// and asks again two thirds through a certificate's life.
func TestIssuedCertificatesPerNamespace(t *testing.T) {
	clk := newFakeClock()
	iss := &fakeIssuer{t: t, ca: newTestCA(t), clock: clk, life: 90 * time.Hour}
	tg := startGateway(t, testConfig(), Deps{CertIssuer: iss, Clock: clk})
	cn := func(sni string) string {
		t.Helper()
		var got string
		eventually(t, "a handshake", func() bool {
			var err error
			got, _, err = handshake(tg.tlsAddr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			return err == nil
		})
		return got
	}
	if got := cn("hello.surge.localhost"); got != "surge.localhost#1" {
		t.Errorf("hello.surge.localhost: %q, want the domain's", got)
	}
	if got := cn("localhost"); got != "surge.localhost#1" {
		t.Errorf("localhost: %q, want the domain's", got)
	}

	routeNamespace(tg.Routes(), "team", "api")
	tg.certs.refresh(t.Context())
	if got := cn("api.team.surge.localhost"); got != "team#2" {
		t.Errorf("api.team.surge.localhost after the loop: %q, want team's", got)
	}
	routeNamespace(tg.Routes(), "late", "api")
	if got := cn("api.late.surge.localhost"); got != "late#3" {
		t.Errorf("api.late.surge.localhost before the loop: %q, want late's, issued at the handshake", got)
	}
	tg.certs.refresh(t.Context())
	if got := cn("x.nope.surge.localhost"); got != "surge.localhost#1" {
		t.Errorf("a namespace with no function: %q, want the domain's (the default)", got)
	}
	if got, want := iss.asked(), []string{"", "team", "late"}; !slices.Equal(got, want) {
		t.Errorf("issuer asked for %q, want %q", got, want)
	}

	// Two thirds of 90h: the loop asks for each again.
	clk.Advance(61 * time.Hour)
	tg.certs.refresh(t.Context())
	if got := cn("hello.surge.localhost"); got == "surge.localhost#1" {
		t.Errorf("after 61h of 90: still %q, want a renewed certificate", got)
	}
	if got := iss.asked(); len(got) != 6 {
		t.Errorf("issuer asked for %q after the renewals, want each of the three again", got)
	}
}

// TestCertificateLoopFollowsTheClock: the loop looks at the files every
// TLSReloadInterval of the gateway's clock, and serves a replaced file's
// certificate after the next tick.
func TestCertificateLoopFollowsTheClock(t *testing.T) {
	ca := newTestCA(t)
	base := filepath.Join(t.TempDir(), "gw")
	ca.write(t, base, leaf{cn: "v1", names: []string{"a.test"}})
	clk := newFakeClock()
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = base+".crt", base+".key"
	s := newCertStore(&cfg, nil, newRoutes(routeConfig{}, routeHooks{}), clk, (&logBuffer{}).logger())
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.load(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	served := func() string { return s.table.Load().def.Leaf.Subject.CommonName }

	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ca.write(t, base, leaf{cn: "v2", names: []string{"a.test"}})
	if got := served(); got != "v1" {
		t.Fatalf("before the tick: %q, want v1", got)
	}
	clk.Advance(cfg.TLSReloadInterval)
	eventually(t, "v2 served after the tick", func() bool { return served() == "v2" })
}

// TestGetCertificateWithoutAny: a handshake the store has no certificate
// for fails with ErrNoCertificate (a store always has one once loaded;
// this is the table before).
func TestGetCertificateWithoutAny(t *testing.T) {
	s := &certStore{routes: newRoutes(routeConfig{}, routeHooks{})}
	s.table.Store(&certTable{byName: map[string][]*tls.Certificate{}})
	if _, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: "a.test"}); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("getCertificate: %v, want ErrNoCertificate", err)
	}
}
