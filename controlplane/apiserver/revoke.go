package apiserver

import (
	"context"
	"net/http"

	"github.com/surgeplatform/surge/controlplane/auth"
)

// cutOnRevoke returns r with a context that ends when p's token is
// revoked, and stop, which the handler calls when it returns (it waits for
// the goroutine that watches). Only long requests need it: each request
// reads its token from etcd, so a revoked token's next request is refused
// on every server, but a watch or a followed log authenticated before the
// revocation would otherwise stream on.
func (s *Server) cutOnRevoke(r *http.Request, p auth.Principal) (*http.Request, func()) {
	ctx, cancel := context.WithCancel(r.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.cfg.Tokens.WaitRevoked(ctx, p.ID, p.TokenRevision); err == nil {
			s.cfg.Log.Info("stream ended: its token was revoked or cannot be checked", "token", p.ID, "path", r.URL.Path)
			cancel()
		}
	}()
	return r.WithContext(ctx), func() {
		cancel()
		<-done
	}
}
