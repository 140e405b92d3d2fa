package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/surgeplatform/surge/internal/clock"
)

// Options are what one role's member is made of. Every role joins gossip
// with Start, and differs from the others only in these values; the
// timings are DefaultConfig's.
type Options struct {
	// Role is what the member does.
	Role Role
	// NodeName is the member's name, unique in the cluster: an agent's node
	// name; "gw-" and a gateway's name; "server-" and a server's.
	NodeName string
	// Addr is where the member listens, on UDP and TCP alike, and what it
	// advertises: HOST:PORT with an IP host (0.0.0.0 advertises the first
	// private address). Port 0 picks a free one (tests, `surge up`).
	Addr string
	// Seeds are gossip addresses (HOST:PORT) of members to join. Start
	// joins them in the background, and the member tries them again every
	// Config.ReconnectInterval while it is alone, so a seed that is not up
	// yet is found once it is. None: the member waits to be joined (the
	// first server).
	Seeds []string
	// Key is the cluster's gossip key (see Config.Key): members with
	// another can neither join nor read.
	Key []byte
	// Meta is what the member tells the others besides its name and role,
	// which Start fills in (an agent's routable Address, say).
	Meta NodeMeta
	// Handler receives the member's events, as documented on Handler. Nil
	// for a member that only wants Members.
	Handler Handler
	// Logger receives the member's and memberlist's logs; nil is
	// slog.Default.
	Logger *slog.Logger
	// Clock is the member's time source; nil is the wall clock.
	Clock clock.Clock
}

// config is the Config that o stands for, and o's own bad fields (Addr);
// the Config's are left to its problems.
func (o Options) config() (Config, []error) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Role, cfg.Key, cfg.Meta = o.NodeName, o.Role, o.Key, o.Meta
	if o.Logger != nil {
		cfg.Logger = o.Logger
	}
	cfg.Clock = clock.Or(o.Clock)
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return cfg, []error{fmt.Errorf("Addr %q is not HOST:PORT (the gossip address, e.g. 0.0.0.0:7946)", o.Addr)}
	}
	var errs []error
	if _, err := netip.ParseAddr(host); err != nil {
		errs = append(errs, fmt.Errorf("Addr %q: host %q is not an IP address", o.Addr, host))
	} else {
		cfg.BindAddr = host
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("Addr %q: port %q is not 0-65535", o.Addr, port))
	} else {
		cfg.BindPort = p
	}
	return cfg, errs
}

// Validate reports every bad field of o at once, each with its name and
// value, as Start would; call it to check options built from flags before
// starting anything.
func (o Options) Validate() error {
	cfg, errs := o.config()
	errs = append(errs, cfg.withDefaults().problems()...)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// Running is a member that Start runs. Its methods are the Gossip's; Stop
// ends it.
type Running struct {
	*Gossip
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start makes a member from o, bound to o.Addr, runs it (see Gossip.Run)
// and joins o.Seeds in the background. It returns ErrInvalidConfig,
// naming every bad field, or the error binding the listeners.
//
// It is how every Surge role joins gossip: the listeners are created in
// the calling goroutine's network namespace, the key is o.Key, and a seed that does not answer yet is retried by Run's
// reconnect loop.
func Start(o Options) (*Running, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	cfg, _ := o.config()
	g, err := New(cfg, o.Handler)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Gossip: g, cancel: cancel}
	r.wg.Go(func() {
		if err := g.Run(ctx); err != nil {
			g.log.Warn("gossip stopped", "err", err)
		}
	})
	if len(o.Seeds) > 0 {
		r.wg.Go(func() {
			if _, err := g.Join(ctx, o.Seeds); err != nil && ctx.Err() == nil {
				g.log.Warn("gossip join failed; retrying in the background", "seeds", o.Seeds, "err", err)
			}
		})
	}
	return r, nil
}

// Stop leaves the cluster (within Config.LeaveTimeout; the others are
// told at once) and returns once everything Start started has exited:
// Run, and a join still in progress (up to Config.StreamTimeout). It may
// be called more than once.
func (r *Running) Stop() {
	r.cancel()
	r.wg.Wait()
}
