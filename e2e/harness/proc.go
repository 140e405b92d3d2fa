package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one process of the cluster, run in its host's namespace. Its
// output goes to a log file under the cluster's directory, kept across
// restarts.
type Proc struct {
	// Name names the process in logs and errors ("agent a2").
	Name string
	Host *Host
	// Script is the shell line that starts it (a README command); Args
	// are appended to it, Env added to the harness's environment.
	Script string
	Args   []string
	Env    []string
	// Dir is its working directory; LogPath where its output goes.
	Dir, LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the process in its host's network namespace and in a UTS
// namespace of its own named after the host, as on a machine of its own:
// `nsenter --net=NS unshare --uts bash -c 'hostname H && exec SCRIPT "$@"'`.
// Each of those execs the next, so its PID is the surge process's own.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	log, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== %s: start %s %s\n", time.Now().Format(time.RFC3339Nano), p.Script, strings.Join(p.Args, " "))
	script := `hostname ` + p.Host.Name + ` && exec ` + p.Script + ` "$@"`
	argv := append([]string{"--net=" + p.Host.NSPath, "--", "unshare", "--uts", "--", "bash", "-c", script, "bash"}, p.Args...)
	cmd := exec.Command("nsenter", argv...)
	cmd.Dir, cmd.Env = p.Dir, append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		log.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// PID is the running process's id, 0 when it is not running.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Proc) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the process runs.
func (p *Proc) Running() bool { return p.PID() != 0 }

// Exited is closed once the process has exited (nil when never started).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends sig and waits for the process to exit, SIGKILLing it after
// grace. It returns how the process ended (nil for exit code 0).
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = nil
	err := p.err
	var ee *exec.ExitError
	if sig == syscall.SIGKILL && errors.As(err, &ee) {
		err = nil // killed, as asked
	}
	return err
}

// Log returns the process's output so far: all of it, or its last n
// lines when n > 0.
func (p *Proc) Log(n int) string {
	b, _ := os.ReadFile(p.LogPath)
	if n <= 0 {
		return string(b)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Throttle runs the process in a CPU cgroup of its own, limited to share
// of one core (0.05 is 5%), until the returned function puts it back
// where it was. The process's children (an agent's containerd) are not
// moved.
func (p *Proc) Throttle(share float64) (restore func() error, err error) {
	pid := p.PID()
	if pid == 0 {
		return nil, fmt.Errorf("%s is not running", p.Name)
	}
	name := "surge-harness-" + strconv.Itoa(pid)
	const period = 100000 // µs
	quota := int(share * period)
	var dir, limitFile, limit string
	switch {
	case exists("/sys/fs/cgroup/cgroup.controllers"): // cgroup v2
		dir, limitFile, limit = filepath.Join("/sys/fs/cgroup", name), "cpu.max", fmt.Sprintf("%d %d", quota, period)
	case exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"): // cgroup v1
		dir, limitFile, limit = filepath.Join("/sys/fs/cgroup/cpu", name), "cpu.cfs_quota_us", strconv.Itoa(quota)
	default:
		return nil, errors.New("no cgroup cpu controller found")
	}
	from, err := cpuCgroupOf(pid, dir)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(limit), 0o644); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("set cpu limit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("move %s into its cgroup: %w", p.Name, err)
	}
	return func() error {
		// Every thread goes back (a v1 cgroup.procs write moves the whole
		// thread group); the cgroup can then go.
		if err := os.WriteFile(filepath.Join(from, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil && p.Running() {
			return fmt.Errorf("move %s back: %w", p.Name, err)
		}
		return removeCgroup(dir)
	}, nil
}

// cpuCgroupOf is the directory of the cpu cgroup a process is in, under
// the same hierarchy as sibling.
func cpuCgroupOf(pid int, sibling string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	v2 := !strings.Contains(sibling, "/sys/fs/cgroup/cpu/")
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 && parts[0] == "0" {
			return filepath.Join("/sys/fs/cgroup", parts[2]), nil
		}
		if !v2 && strings.Contains(","+parts[1]+",", ",cpu,") {
			return filepath.Join("/sys/fs/cgroup/cpu", parts[2]), nil
		}
	}
	return "", fmt.Errorf("no cpu cgroup for pid %d in %q", pid, bytes.TrimSpace(b))
}

// removeCgroup removes an empty cgroup, waiting briefly for exiting
// members to leave it.
func removeCgroup(dir string) error {
	var err error
	for range 50 {
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}
