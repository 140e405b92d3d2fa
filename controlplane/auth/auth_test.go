package auth_test

import (
	"context"
	"errors"
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
	resources := []string{"functions", "revisions", "traffic", "scales", "replicas", "nodes",
		auth.ResourceTokens, auth.ResourceMetrics, auth.ResourceActivations, auth.ResourceStats, auth.ResourceRegistry}
	// mayWrite lists, per role, what it may write; every role reads all
	// but the tokens, which only the admin sees.
	mayWrite := map[auth.Role][]string{
		auth.RoleAdmin:   resources,
		auth.RoleViewer:  nil,
		auth.RoleNode:    {"replicas", "nodes"},
		auth.RoleGateway: {auth.ResourceActivations, auth.ResourceStats},
	}
	for role, writes := range mayWrite {
		for _, res := range resources {
			wantRead := role == auth.RoleAdmin || res != auth.ResourceTokens
			wantWrite := false
			for _, w := range writes {
				wantWrite = wantWrite || w == res
			}
			if got := auth.Allowed(role, auth.Read, res); got != wantRead {
				t.Errorf("%s may read %s: %v, want %v", role, res, got, wantRead)
			}
			if got := auth.Allowed(role, auth.Write, res); got != wantWrite {
				t.Errorf("%s may write %s: %v, want %v", role, res, got, wantWrite)
			}
		}
	}
	if auth.Allowed("root", auth.Read, "functions") {
		t.Error("an unknown role may read")
	}
}
