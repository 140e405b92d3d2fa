package controlplane_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

// TestRevokedDataDirTokens: an admin, gateway or join token the data dir
// keeps that was revoked (a rotation) is made anew at the next start, so
// that surge up and the client config it writes work again; the gossip
// key, which no token gives, stays.
func TestRevokedDataDirTokens(t *testing.T) {
	ctx := context.Background()
	in := controlplanetest.Start(t)
	oldAdmin, oldGateway, oldJoin := in.Server().AdminConfig().Token, in.Server().GatewayToken(), in.Server().JoinToken()
	oldKey := in.Server().GossipKey()

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
	if admin == oldAdmin || gateway == oldGateway || in.Server().JoinToken() == oldJoin {
		t.Fatal("a revoked admin, gateway or join token is still the data dir's")
	}
	if !bytes.Equal(in.Server().GossipKey(), oldKey) || len(oldKey) != 32 {
		t.Errorf("the gossip key changed with the tokens: %x, was %x", in.Server().GossipKey(), oldKey)
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
