package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/surgeplatform/surge/gossip"
)

// startGossip makes a gossip member bound to addr (host:port), runs it
// until ctx ends, and joins seeds in the background (a seed that is not up
// yet is retried by the member itself). wait returns once it has left.
func startGossip(ctx context.Context, cfg gossip.Config, addr string, seeds []string, h gossip.Handler, log *slog.Logger) (g *gossip.Gossip, wait func(), err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--gossip-addr %q: want HOST:PORT", addr)
	}
	cfg.BindAddr = host
	if cfg.BindPort, err = strconv.Atoi(port); err != nil {
		return nil, nil, fmt.Errorf("--gossip-addr %q: bad port", addr)
	}
	cfg.Logger = log
	g, err = gossip.New(cfg, h)
	if err != nil {
		return nil, nil, fmt.Errorf("gossip: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Run(ctx); err != nil {
			log.Warn("gossip stopped", "err", err)
		}
	}()
	if len(seeds) > 0 {
		go func() {
			if _, err := g.Join(ctx, seeds); err != nil && ctx.Err() == nil {
				log.Warn("gossip join; retrying in the background", "seeds", seeds, "err", err)
			}
		}()
	}
	return g, func() { <-done }, nil
}
