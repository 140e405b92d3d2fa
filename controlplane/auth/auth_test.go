package auth_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTokens(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake()
	clk.Advance(90 * time.Second)
	tokens := auth.NewStore(etcdtest.Start(t), clk)

	secret, tok, err := tokens.Create(ctx, auth.RoleViewer, "for the dashboard")
	if err != nil {
		t.Fatal(err)
	}
	id, rest, ok := strings.Cut(secret, ".")
	if !ok || id != tok.ID || len(id) != 12 || len(rest) < 40 {
		t.Errorf("secret %q for token %s: want ID.SECRET with 12 hex digits of ID and 256 bits of secret", secret, tok.ID)
	}
	if tok.Role != auth.RoleViewer || tok.Description != "for the dashboard" || tok.Hash != "" {
		t.Errorf("created %+v: want the role and description, and no hash", tok)
	}
	if want := clock.Epoch.Add(90 * time.Second); !tok.Created.Equal(want) {
		t.Errorf("created at %v, want the clock's %v", tok.Created, want)
	}

	got, err := tokens.Authenticate(ctx, secret)
	if err != nil {
		t.Fatalf("authenticate with the secret: %v", err)
	}
	if diff := cmp.Diff(tok, got); diff != "" {
		t.Errorf("authenticated as another token (-created +got):\n%s", diff)
	}
	for _, bad := range []string{
		"", "no-dot", id + ".", id + ".wrong", "000000000000." + rest, "short." + rest, id + "/x." + rest, rest + "." + id,
	} {
		if _, err := tokens.Authenticate(ctx, bad); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("authenticate %q: %v, want ErrInvalidToken", bad, err)
		}
	}

	if _, _, err := tokens.Create(ctx, auth.RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	list, err := tokens.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("listed %d tokens, want 2", len(list))
	}
	for _, l := range list {
		if l.Hash != "" {
			t.Errorf("list shows token %s's hash", l.ID)
		}
	}

	if deleted, err := tokens.Delete(ctx, id); err != nil || !deleted {
		t.Errorf("revoke: %v, %v; want deleted", deleted, err)
	}
	if _, err := tokens.Authenticate(ctx, secret); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a revoked token: %v, want ErrInvalidToken", err)
	}
	for _, gone := range []string{id, "", "../x", "000000000000"} {
		if deleted, err := tokens.Delete(ctx, gone); err != nil || deleted {
			t.Errorf("revoke %q: %v, %v; want nothing deleted", gone, deleted, err)
		}
	}
}

func TestCreateRejectsUnknownRoles(t *testing.T) {
	tokens := auth.NewStore(etcdtest.Start(t), nil)
	if _, _, err := tokens.Create(context.Background(), auth.Role("root"), ""); err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("Create(root) = %v, want an error naming the role", err)
	}
}

func TestRoles(t *testing.T) {
	for _, r := range auth.Roles {
		if !r.Valid() {
			t.Errorf("role %q is listed but not valid", r)
		}
	}
	for _, r := range []auth.Role{"", "root", "Admin"} {
		if r.Valid() {
			t.Errorf("role %q is valid", r)
		}
	}
}

func TestAllowed(t *testing.T) {
	resources := []string{"functions", "revisions", "traffic", "scales", "replicas", "nodes", "pullsecrets",
		auth.ResourceTokens, auth.ResourceMetrics, auth.ResourceActivations, auth.ResourceStats, auth.ResourceRegistry,
		auth.ResourceVersion, auth.ResourceWhoami, auth.ResourceLogs, auth.ResourceBootstrap, auth.ResourceCertificates}
	node := auth.NodePrincipal("node-a", netip.MustParseAddr("10.0.0.5"))
	all := func(except ...string) []string {
		return slices.DeleteFunc(slices.Clone(resources), func(r string) bool { return slices.Contains(except, r) })
	}
	for _, tc := range []struct {
		name          string
		p             auth.Principal
		read, written []string
	}{
		{"admin", auth.Principal{Role: auth.RoleAdmin, ID: "a"}, resources, resources},
		{"viewer", auth.Principal{Role: auth.RoleViewer, ID: "v"}, all(auth.ResourceTokens, auth.ResourceBootstrap), nil},
		{"gateway", auth.Principal{Role: auth.RoleGateway, ID: "g"}, all(auth.ResourceTokens, auth.ResourceBootstrap, auth.ResourceLogs),
			[]string{auth.ResourceActivations, auth.ResourceStats}},
		// The join token: a node-role token that names no node.
		{"join token", auth.Principal{Role: auth.RoleNode, ID: "j"}, nil, []string{auth.ResourceBootstrap}},
		{"node certificate", node, []string{"revisions", "replicas", "nodes", "pullsecrets", auth.ResourceRegistry, auth.ResourceVersion, auth.ResourceWhoami},
			[]string{"replicas", "nodes", auth.ResourceCertificates}},
		{"unknown role", auth.Principal{Role: "root", ID: "r"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, res := range resources {
				if got, want := auth.Allowed(tc.p, auth.Read, res), slices.Contains(tc.read, res); got != want {
					t.Errorf("may read %s: %v, want %v", res, got, want)
				}
				if got, want := auth.Allowed(tc.p, auth.Write, res), slices.Contains(tc.written, res); got != want {
					t.Errorf("may write %s: %v, want %v", res, got, want)
				}
			}
		})
	}
	if got := node.Name(); got != "node node-a" {
		t.Errorf("node principal's name %q", got)
	}
	if got := auth.TokenPrincipal(auth.Token{ID: "0123456789ab", Role: auth.RoleViewer}).Name(); got != "token 0123456789ab (role viewer)" {
		t.Errorf("token principal's name %q", got)
	}
}

func TestLastAdminTokenCannotBeRevoked(t *testing.T) {
	ctx := context.Background()
	tokens := auth.NewStore(etcdtest.Start(t), nil)
	_, first, err := tokens.Create(ctx, auth.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	_, viewer, err := tokens.Create(ctx, auth.RoleViewer, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Delete(ctx, first.ID); !errors.Is(err, auth.ErrLastAdmin) {
		t.Errorf("revoke the only admin token: %v, want ErrLastAdmin", err)
	}
	_, second, err := tokens.Create(ctx, auth.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tokens.Delete(ctx, first.ID); !ok || err != nil {
		t.Errorf("revoke one of two admin tokens: %v, %v", ok, err)
	}
	if _, err := tokens.Delete(ctx, second.ID); !errors.Is(err, auth.ErrLastAdmin) {
		t.Errorf("revoke the admin token left: %v, want ErrLastAdmin", err)
	}
	if ok, err := tokens.Delete(ctx, viewer.ID); !ok || err != nil {
		t.Errorf("revoke a viewer token: %v, %v", ok, err)
	}
}

// TestWaitRevoked: WaitRevoked returns once the token is revoked, also
// when that happened between its authentication and the wait, and with
// the context's error when the context ends first.
func TestWaitRevoked(t *testing.T) {
	ctx := context.Background()
	tokens := auth.NewStore(etcdtest.Start(t), nil)
	secret, _, err := tokens.Create(ctx, auth.RoleViewer, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Authenticate(ctx, secret)
	if err != nil || tok.Revision == 0 {
		t.Fatalf("authenticate: %+v %v, want a revision", tok, err)
	}
	done := make(chan error, 1)
	go func() { done <- tokens.WaitRevoked(ctx, tok.ID, tok.Revision) }()
	if _, err := tokens.Delete(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("wait for a revocation: %v", err)
	}
	// Revoked before the wait began: the wait sees it.
	if err := tokens.WaitRevoked(ctx, tok.ID, tok.Revision); err != nil {
		t.Errorf("wait for a past revocation: %v", err)
	}

	secret, _, err = tokens.Create(ctx, auth.RoleViewer, "")
	if err != nil {
		t.Fatal(err)
	}
	live, err := tokens.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- tokens.WaitRevoked(cctx, live.ID, live.Revision) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("wait ended by its context: %v, want context.Canceled", err)
	}
}
