package gossip

import (
	"context"
	"fmt"
	"net"
	"strconv"
)

// Start makes a member bound to addr (HOST:PORT; port 0 picks one), runs
// it, and joins seeds in the background (a seed not up yet is retried by
// Run's reconnect loop). stop leaves the cluster and waits for the member.
// It is how every Surge role (server, agent, gateway) joins gossip.
func Start(cfg Config, addr string, seeds []string, h Handler) (g *Gossip, stop func(), err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("gossip address %q: want HOST:PORT", addr)
	}
	cfg.BindAddr = host
	if cfg.BindPort, err = strconv.Atoi(port); err != nil {
		return nil, nil, fmt.Errorf("gossip address %q: bad port", addr)
	}
	if g, err = New(cfg, h); err != nil {
		return nil, nil, fmt.Errorf("gossip: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Run(ctx); err != nil {
			g.log.Warn("gossip stopped", "err", err)
		}
	}()
	if len(seeds) > 0 {
		go func() {
			if _, err := g.Join(ctx, seeds); err != nil && ctx.Err() == nil {
				g.log.Warn("gossip join failed; retrying in the background", "seeds", seeds, "err", err)
			}
		}()
	}
	return g, func() { cancel(); <-done }, nil
}
