// Package leader runs work on one control-plane server at a time: the
// servers campaign through an etcd election (etcd's concurrency.Election,
// a lease-backed key per candidate, the oldest one leads), and the winner
// runs its tasks until it stops or loses its lease.
//
// Losing the lease (a partition, a stalled process) ends the term: the
// tasks' context ends, and the candidate campaigns again after a back-off.
// A clean stop resigns at once, so the next server leads without waiting
// for the lease to expire.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/sync/errgroup"

	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

// Task is work that runs only on the leader. Its ctx ends when the term
// does; it returns when ctx ends. An error ends the term early: the
// candidate resigns, and campaigns again after a back-off. A Task that
// returns nil early just ends; the others go on. Each Task runs on a
// goroutine of its own.
type Task func(ctx context.Context) error

// Config configures an Elector. Make it with DefaultConfig.
type Config struct {
	// Key is the election's etcd key prefix; the candidates of one
	// election share it. Required.
	Key string
	// ID names this candidate; it is stored under Key while it campaigns
	// and leads. Required.
	ID string
	// TTL is the lease's time to live in seconds: how long a crashed
	// leader blocks the next one, and how soon a leader cut off from etcd
	// stops leading. Shorter fails over faster, and costs more keep-alives
	// and more false losses on a loaded etcd.
	TTL int
	// Backoff paces the campaigns after a term ends or a campaign fails,
	// so that a flapping etcd is not hammered. It starts over after a term.
	Backoff backoff.Policy
	// ResignTimeout bounds resigning and revoking the lease at the end of
	// a term; past it (etcd unreachable), the lease's expiry ends the
	// leadership instead. It is a deadline on calls to etcd, so it runs on
	// the wall clock, as etcd does, and never on Clock.
	ResignTimeout time.Duration
	// Clock paces the back-off between campaigns; nil is the wall clock.
	Clock clock.Clock
	// Log receives the terms' starts and ends; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the defaults; Key and ID are left to the caller.
func DefaultConfig() Config {
	return Config{
		TTL:           10,
		Backoff:       backoff.Policy{Base: 500 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2},
		ResignTimeout: time.Second,
	}
}

// withDefaults returns a copy with the zero fields filled.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.TTL == 0 {
		c.TTL = d.TTL
	}
	if c.Backoff == (backoff.Policy{}) {
		c.Backoff = d.Backoff
	}
	if c.ResignTimeout == 0 {
		c.ResignTimeout = d.ResignTimeout
	}
	c.Clock = clock.Or(c.Clock)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Key == "" {
		errs = append(errs, errors.New("leader Key is empty: want an etcd key prefix"))
	}
	if c.ID == "" {
		errs = append(errs, errors.New("leader ID is empty: want this candidate's name"))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("leader TTL %d: want > 0 seconds", c.TTL))
	}
	if c.Backoff.Base < 0 || c.Backoff.Max < 0 {
		errs = append(errs, fmt.Errorf("leader Backoff %+v: want no negative delay", c.Backoff))
	}
	if c.ResignTimeout < 0 {
		errs = append(errs, fmt.Errorf("leader ResignTimeout %s: want >= 0", c.ResignTimeout))
	}
	return errors.Join(errs...)
}

// Elector campaigns for one election and runs tasks while it leads.
type Elector struct {
	cfg Config
	cli *clientv3.Client
}

// New checks cfg and returns an Elector on an etcd client.
func New(cli *clientv3.Client, cfg Config) (*Elector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Elector{cfg: cfg, cli: cli}, nil
}

// errLost ends a term whose lease was lost.
var errLost = errors.New("etcd session lost")

// Run campaigns, runs tasks while leading, and campaigns again whenever a
// term ends, until ctx ends. It returns nil once ctx has ended, every task
// has returned and this candidate has resigned.
func (e *Elector) Run(ctx context.Context, tasks ...Task) error {
	attempt := 0
	for {
		led, err := e.term(ctx, tasks)
		if ctx.Err() != nil {
			return nil
		}
		if led {
			attempt = 0
		}
		attempt++
		delay := e.cfg.Backoff.Delay(attempt)
		if led {
			e.cfg.Log.Warn("leadership ended; campaigning again", "id", e.cfg.ID, "err", err, "after", delay)
		} else {
			e.cfg.Log.Warn("campaign failed; trying again", "id", e.cfg.ID, "err", err, "after", delay)
		}
		if !clock.Sleep(ctx, e.cfg.Clock, delay) {
			return nil
		}
	}
}

// term campaigns once and, if elected, leads until ctx ends, the lease is
// lost or a task fails. led reports whether it was elected.
func (e *Elector) term(ctx context.Context, tasks []Task) (led bool, err error) {
	lease, err := e.cli.Grant(ctx, int64(e.cfg.TTL))
	if err != nil {
		return false, fmt.Errorf("grant lease: %w", err)
	}
	// The session is not ended by ctx: a clean stop must still resign and
	// revoke the lease after ctx ends.
	sessCtx, cancelSess := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSess()
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.cfg.TTL), concurrency.WithContext(sessCtx))
	if err != nil {
		e.revoke(ctx, lease.ID)
		return false, fmt.Errorf("start etcd session: %w", err)
	}
	// At the end, stop the keep-alives and revoke the lease, which deletes
	// the election key if a resign did not.
	defer func() {
		sess.Orphan()
		e.revoke(ctx, lease.ID)
	}()

	// termCtx ends with ctx or with the session, whichever is first.
	termCtx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	stop := context.AfterFunc(sess.Ctx(), endTerm)
	defer stop()

	el := concurrency.NewElection(sess, e.cfg.Key)
	if err := el.Campaign(termCtx, e.cfg.ID); err != nil {
		if sess.Ctx().Err() != nil {
			err = errLost
		}
		return false, fmt.Errorf("campaign: %w", err)
	}
	e.cfg.Log.Info("leading", "id", e.cfg.ID, "election", e.cfg.Key)

	g, gctx := errgroup.WithContext(termCtx)
	for _, task := range tasks {
		g.Go(func() error { return task(gctx) })
	}
	err = g.Wait()
	if err == nil {
		// Every task has returned on its own: lead on until the term ends.
		<-termCtx.Done()
	}
	if sess.Ctx().Err() != nil {
		// The lease is gone, and the election key with it: nothing to resign.
		return true, errLost
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ResignTimeout)
	defer cancel()
	if rerr := el.Resign(rctx); rerr != nil {
		e.cfg.Log.Warn("resign failed; the lease's expiry ends the term", "id", e.cfg.ID, "err", rerr)
	}
	if err != nil {
		return true, fmt.Errorf("leader task: %w", err)
	}
	return true, nil
}

// revoke gives up a lease, bounded as a resign is: past ResignTimeout (etcd
// unreachable), the lease's own expiry frees what it holds.
func (e *Elector) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ResignTimeout)
	defer cancel()
	_, _ = e.cli.Revoke(rctx, id)
}
