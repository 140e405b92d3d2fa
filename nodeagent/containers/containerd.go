package containers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/surgeplatform/surge/internal/clock"
)

// probe reports whether a containerd answers at addr, with its version.
// A missing socket or refused connection answers at once; a hung daemon
// within a second or two.
func probe(ctx context.Context, addr string) (string, bool) {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "unix", addr)
	if err != nil {
		return "", false
	}
	conn.Close()
	c, err := client.New(addr, client.WithTimeout(time.Second))
	if err != nil {
		return "", false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		return "", false
	}
	return v.Version, true
}

// privateContainerd is a containerd this runtime started, as a child
// process in its own process group (a Ctrl-C to the agent does not reach
// it; Close stops it). Its containers' shims are not its children: they
// keep running when it stops, and a containerd started later on the same
// root and state reconnects to them.
type privateContainerd struct {
	clock  clock.Clock
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returns
	err    error         // cmd.Wait's result, valid after exited
	log    string
}

// privateConfig is containerd's config for the private instance: every
// path under dir, and no CRI plugin (Surge drives containerd itself; CRI
// would want its own CNI config and a port).
func privateConfig(dir string) []byte {
	q := strconv.Quote
	return fmt.Appendf(nil, `version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %s

[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, q(filepath.Join(dir, "root")), q(filepath.Join(dir, "state")),
		q(filepath.Join(dir, "containerd.sock")), q(filepath.Join(dir, "opt")))
}

// startPrivateContainerd starts containerd with its files under dir and
// waits until it answers, ctx ends, or it exits; clk paces the wait.
func startPrivateContainerd(ctx context.Context, clk clock.Clock, binary, dir string) (*privateContainerd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("start private containerd: needs root")
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("start private containerd: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start private containerd: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, privateConfig(dir), 0o600); err != nil {
		return nil, fmt.Errorf("start private containerd: %w", err)
	}
	addr := filepath.Join(dir, "containerd.sock")
	// A socket file left by a containerd that died would make it fail to
	// listen; nothing answers there (probe said so).
	os.Remove(addr)

	logPath := filepath.Join(dir, "containerd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start private containerd: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start private containerd: %w", err)
	}
	p := &privateContainerd{clock: clk, cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	// Timers, not a context deadline: probe's own I/O deadlines are real
	// time, whatever the clock.
	expired := clk.NewTimer(30 * time.Second)
	defer expired.Stop()
	poll := clk.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, ok := probe(ctx, addr); ok {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("start private containerd: exited (%v); see %s", p.err, logPath)
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("start private containerd: not answering at %s: %w; see %s", addr, ctx.Err(), logPath)
		case <-expired.Chan():
			p.stop()
			return nil, fmt.Errorf("start private containerd: not answering at %s after 30s; see %s", addr, logPath)
		case <-poll.Chan():
		}
	}
}

// stop sends SIGTERM, then SIGKILL if containerd has not exited within ten
// seconds, and waits for it.
func (p *privateContainerd) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := p.clock.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.Chan():
		p.cmd.Process.Kill()
		<-p.exited
	}
	var ee *exec.ExitError
	if p.err != nil && !(errors.As(p.err, &ee) && !ee.Exited()) {
		// Exiting on our signal is the normal end.
		return fmt.Errorf("stop private containerd: %w", p.err)
	}
	return nil
}
