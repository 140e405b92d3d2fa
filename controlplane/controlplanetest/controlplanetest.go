// Package controlplanetest starts real control-plane servers (embedded
// etcd, HTTPS API) in a test's temporary directory, on free loopback ports,
// for the integration tests of every role.
package controlplanetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/store"
)

// Instance is a running server that a test can stop and start again on the
// same data directory and ports.
type Instance struct {
	t      testing.TB
	Config controlplane.Config
	server *controlplane.Server
	cancel context.CancelFunc
	done   chan error
}

// FreePort returns a loopback address with a port nobody listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	return etcdtest.FreePort(t)
}

// Start runs a server in t's temporary directory and stops it when the test
// ends.
func Start(t testing.TB) *Instance {
	t.Helper()
	return StartWith(t, nil)
}

// StartWith is Start with a hook that adjusts the configuration first.
func StartWith(t testing.TB, configure func(*controlplane.Config)) *Instance {
	t.Helper()
	dir := t.TempDir()
	cfg := controlplane.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Name = "test"
	cfg.UserConfigPath = filepath.Join(dir, "config.yaml")
	in := &Instance{t: t}
	// A free port can be taken by another process before the server binds
	// it (other test binaries run at the same time): the first start picks
	// new ports then, which no test has seen yet.
	for attempt := 1; ; attempt++ {
		in.Config = cfg
		in.Config.APIAddr, in.Config.EtcdClientAddr, in.Config.EtcdPeerAddr = FreePort(t), FreePort(t), FreePort(t)
		if configure != nil {
			configure(&in.Config)
		}
		err := in.start()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatalf("server did not start: %v", err)
		}
		_ = os.RemoveAll(in.Config.DataDir)
	}
	t.Cleanup(in.Stop)
	return in
}

// Restart starts the server if it is stopped.
func (in *Instance) Restart() {
	in.t.Helper()
	if in.server != nil {
		return
	}
	if err := in.start(); err != nil {
		in.t.Fatalf("server did not start: %v", err)
	}
}

// start runs the server and waits until it is ready.
func (in *Instance) start() error {
	srv, err := controlplane.New(in.Config, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		return err
	case <-time.After(2 * time.Minute):
		cancel()
		<-done
		return errors.New("not ready within 2m")
	}
	in.server, in.cancel, in.done = srv, cancel, done
	return nil
}

// Stop stops the server and waits for it; it is a no-op when stopped.
func (in *Instance) Stop() {
	in.t.Helper()
	if in.server == nil {
		return
	}
	in.cancel()
	if err := <-in.done; err != nil {
		in.t.Errorf("server stopped with an error: %v", err)
	}
	in.server = nil
}

// Server is the running server.
func (in *Instance) Server() *controlplane.Server { return in.server }

// Store is the running server's object store.
func (in *Instance) Store() *store.Store { return in.server.Store() }

// AdminConfig is the admin client config.
func (in *Instance) AdminConfig() *client.Config {
	c := *in.server.AdminConfig()
	return &c
}

// Client returns an admin client.
func (in *Instance) Client() *client.Client {
	in.t.Helper()
	return in.ClientWithToken(in.server.AdminConfig().Token)
}

// ClientWithToken returns a client that sends token.
func (in *Instance) ClientWithToken(token string) *client.Client {
	in.t.Helper()
	cfg := in.AdminConfig()
	cfg.Token = token
	c, err := client.New(cfg)
	if err != nil {
		in.t.Fatalf("client: %v", err)
	}
	return c
}

// URL is the API's base URL.
func (in *Instance) URL() string { return "https://" + in.Config.APIAddr }

// Port is the API's port, as a string.
func (in *Instance) Port() string {
	_, p, _ := net.SplitHostPort(in.Config.APIAddr)
	if _, err := strconv.Atoi(p); err != nil {
		in.t.Fatalf("bad API address %q", in.Config.APIAddr)
	}
	return p
}
