package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/pki"
)

// AdminConfigFile is the admin client config's name in the data dir.
const AdminConfigFile = "admin.yaml"

// JoinTokenFile holds the cluster's join token: a node-role API token that
// agents present, from which the gossip encryption key is also derived.
const JoinTokenFile = "join-token"

// GatewayTokenFile holds a gateway-role token, for gateways this server
// starts or that an operator starts with it.
const GatewayTokenFile = "gateway-token"

// roleToken returns the token kept in DATA_DIR/file, making one of role at
// the first start, and again when the one kept was revoked (surge token
// revoke) — but for the join token, from which every member derives the
// gossip key: a new one would split gossip, so the server says what to do
// and goes on with it (nodes that joined hold certificates and need it for
// gossip only).
func (s *Server) roleToken(ctx context.Context, tokens *auth.Store, file string, role auth.Role) (string, error) {
	path := filepath.Join(s.cfg.DataDir, file)
	b, err := os.ReadFile(path)
	how := "made at first start"
	if err == nil {
		secret := strings.TrimSpace(string(b))
		revoked, err := isRevoked(ctx, tokens, secret)
		switch {
		case err != nil:
			return "", fmt.Errorf("check %s: %w", file, err)
		case !revoked:
			return secret, nil
		}
		s.log.Info("the token in the data dir was revoked: making a new one", "file", path)
		how = "made anew at start: the one before was revoked"
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	secret, _, err := tokens.Create(ctx, role, file+", "+how)
	if err != nil {
		return "", fmt.Errorf("make %s: %w", file, err)
	}
	if err := pki.WriteFileAtomic(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	return secret, nil
}

// bootstrap returns the admin client config, making the admin token and
// writing DATA_DIR/admin.yaml (mode 0600) on the first start. It also
// writes the user's config when that is asked for and absent, so that the
// CLI works right after `surge up` with no set-up.
func (s *Server) bootstrap(ctx context.Context, tokens *auth.Store, caPEM []byte) (*client.Config, error) {
	path := filepath.Join(s.cfg.DataDir, AdminConfigFile)
	cfg, err := client.LoadConfig(path)
	how := "made at first start"
	if err == nil {
		revoked, rerr := isRevoked(ctx, tokens, cfg.Token)
		if rerr != nil {
			return nil, fmt.Errorf("check %s: %w", AdminConfigFile, rerr)
		}
		if revoked {
			// Another admin revoked it (a rotation): the data dir's
			// admin config gets a token of its own again.
			s.log.Info("the admin token in the data dir was revoked: making a new one", "file", path)
			err, how = client.ErrNoConfig, "made anew at start: the one before was revoked"
		}
	}
	switch {
	case err == nil:
		// The address may have changed (a new --api-addr); the token holds.
		cfg.Server = s.apiURL()
		cfg.CertificateAuthority = string(caPEM)
	case errors.Is(err, client.ErrNoConfig):
		secret, _, err := tokens.Create(ctx, auth.RoleAdmin, "admin, "+how)
		if err != nil {
			return nil, fmt.Errorf("make admin token: %w", err)
		}
		cfg = &client.Config{Server: s.apiURL(), CertificateAuthority: string(caPEM), Token: secret}
	default:
		return nil, err
	}
	b, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	if s.cfg.WriteUserConfig && s.cfg.UserConfigPath != "" {
		// Write it when absent, or when it is for this same API (a data dir
		// made anew has a new CA and token); leave anyone else's alone.
		// A file of several contexts has the context for this API updated,
		// the others kept.
		f, err := client.LoadFile(s.cfg.UserConfigPath)
		switch {
		case errors.Is(err, client.ErrNoConfig):
			if err := os.MkdirAll(filepath.Dir(s.cfg.UserConfigPath), 0o700); err != nil {
				return nil, fmt.Errorf("write client config: %w", err)
			}
			if err := pki.WriteFileAtomic(s.cfg.UserConfigPath, b, 0o600); err != nil {
				return nil, err
			}
			s.log.Info("wrote client config", "path", s.cfg.UserConfigPath)
		case err == nil:
			changed := false
			for i := range f.Contexts {
				if c := &f.Contexts[i]; c.Server == cfg.Server && c.Token != cfg.Token {
					c.Token, c.CertificateAuthority, changed = cfg.Token, cfg.CertificateAuthority, true
				}
			}
			if changed {
				if err := f.Save(s.cfg.UserConfigPath); err != nil {
					return nil, err
				}
				s.log.Info("updated client config", "path", s.cfg.UserConfigPath)
			}
		}
	}
	return cfg, nil
}

// isRevoked reports whether a token the data dir keeps no longer
// authenticates.
func isRevoked(ctx context.Context, tokens *auth.Store, secret string) (bool, error) {
	_, err := tokens.Authenticate(ctx, secret)
	if errors.Is(err, auth.ErrInvalidToken) {
		return true, nil
	}
	return false, err
}

// apiURL is the URL clients use: the listening address, with a wildcard
// host replaced by loopback.
func (s *Server) apiURL() string {
	host, port, _ := net.SplitHostPort(s.addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}
