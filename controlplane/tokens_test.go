package controlplane_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// TestRevokedDataDirTokens: an admin or gateway token the data dir keeps
// that was revoked (a rotation) is made anew at the next start, so that
// surge up and the client config it writes work again; the join token,
// which keys gossip, is kept, and the log says what to do.
func TestRevokedDataDirTokens(t *testing.T) {
	ctx := context.Background()
	in := controlplanetest.Start(t)
	oldAdmin, oldGateway, oldJoin := in.Server().AdminConfig().Token, in.Server().GatewayToken(), in.Server().JoinToken()

	var second api.NewToken
	if err := in.Client().Do(ctx, http.MethodPost, "/v1/tokens", api.TokenRequest{Role: "admin", Description: "rotation"}, &second); err != nil {
		t.Fatal(err)
	}
	rotator := in.ClientWithToken(second.Secret)
	for _, tok := range []string{oldAdmin, oldGateway, oldJoin} {
		id, _, _ := strings.Cut(tok, ".")
		if err := rotator.Do(ctx, http.MethodDelete, "/v1/tokens/"+id, nil, nil); err != nil {
			t.Fatalf("revoke %s: %v", id, err)
		}
	}
	in.Stop()
	in.Restart()

	admin, gateway := in.Server().AdminConfig().Token, in.Server().GatewayToken()
	if admin == oldAdmin || gateway == oldGateway {
		t.Fatal("the revoked admin or gateway token is still the data dir's")
	}
	if in.Server().JoinToken() != oldJoin {
		t.Error("the join token, which keys gossip, was replaced")
	}
	for _, tok := range []string{admin, gateway} {
		if _, err := client.List[api.Node](ctx, in.ClientWithToken(tok), "", nil); err != nil {
			t.Errorf("a new data dir token does not work: %v", err)
		}
	}
	user, err := client.LoadConfig(in.Config.UserConfigPath)
	if err != nil || user.Token != admin {
		t.Errorf("the client config holds %v (%v), want the new admin token", user, err)
	}
	if _, err := client.List[api.Node](ctx, in.ClientWithToken(oldAdmin), "", nil); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("the revoked admin token: %v, want 401", err)
	}
}
