package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// A bridge and its subnet belong to one agent at a time. A second agent on
// the same bridge would hand out the first one's addresses again (its
// host-local store knows nothing of them), and the gateway would reach the
// wrong replica. ClaimBridge takes an exclusive flock(2) on a file named
// after the bridge and the network namespace it lives in: the kernel drops
// the lock when its holder dies, however it dies, so a crashed agent never
// blocks the next. The file also names its holder, for the refusal.

// ErrBridgeOwned is what an *OwnedError wraps.
var ErrBridgeOwned = errors.New("network: bridge owned by another agent")

// Owner is what a claim records of the agent that holds it.
type Owner struct {
	// StateDir is the holder's network state dir (Config.StateDir).
	StateDir string `json:"stateDir"`
	// Node is the holder's node name.
	Node string `json:"node,omitempty"`
	PID  int    `json:"pid"`
}

// OwnedError is ClaimBridge's answer when another process holds the
// bridge. Owner is zero when the holder had not written its record yet.
type OwnedError struct {
	Bridge string
	Owner  Owner
}

func (e *OwnedError) Error() string {
	if e.Owner.PID == 0 {
		return fmt.Sprintf("network: bridge %s belongs to another agent", e.Bridge)
	}
	return fmt.Sprintf("network: bridge %s belongs to the agent of node %q (state dir %s, pid %d)",
		e.Bridge, e.Owner.Node, e.Owner.StateDir, e.Owner.PID)
}

// Unwrap returns ErrBridgeOwned.
func (e *OwnedError) Unwrap() error { return ErrBridgeOwned }

// Claim is an agent's exclusive hold on its bridge. Release ends it; so
// does the process's death.
type Claim struct {
	bridge string
	path   string

	mu sync.Mutex
	f  *os.File // nil once released
}

// ClaimBridge takes the bridge of cfg (BridgeName, in the caller's
// network namespace) for the agent of node, or returns an *OwnedError
// naming the agent that holds it. It does not wait.
func ClaimBridge(cfg Config, node string) (*Claim, error) {
	cfg = cfg.withDefaults()
	if !filepath.IsAbs(cfg.LockDir) || cfg.BridgeName == "" || len(cfg.BridgeName) > 15 {
		return nil, fmt.Errorf("network: claim bridge %q in lock dir %q: want a bridge name and an absolute dir", cfg.BridgeName, cfg.LockDir)
	}
	ns, err := inode("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("network: claim bridge %s: %w", cfg.BridgeName, err)
	}
	if err := os.MkdirAll(cfg.LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("network: claim bridge %s: %w", cfg.BridgeName, err)
	}
	path := filepath.Join(cfg.LockDir, "bridge-"+strconv.FormatUint(ns, 10)+"-"+cfg.BridgeName+".lock")
	me := Owner{StateDir: cfg.StateDir, Node: node, PID: os.Getpid()}
	// A holder that releases unlinks the file while it still holds the
	// lock: a lock won on a file no longer at path is on nothing, and the
	// next try opens the new one. Two tries lose only to such a race.
	for range 8 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("network: claim bridge %s: %w", cfg.BridgeName, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			var holder Owner
			b, _ := io.ReadAll(f)
			_ = json.Unmarshal(b, &holder)
			f.Close()
			return nil, &OwnedError{Bridge: cfg.BridgeName, Owner: holder}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("network: claim bridge %s: lock %s: %w", cfg.BridgeName, path, err)
		}
		if !samePath(f, path) {
			f.Close()
			continue
		}
		b, _ := json.Marshal(me)
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("network: claim bridge %s: %w", cfg.BridgeName, err)
		}
		if _, err := f.WriteAt(b, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("network: claim bridge %s: %w", cfg.BridgeName, err)
		}
		return &Claim{bridge: cfg.BridgeName, path: path, f: f}, nil
	}
	return nil, fmt.Errorf("network: claim bridge %s: %s keeps being replaced", cfg.BridgeName, path)
}

// samePath reports whether f is the file at path now.
func samePath(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// Bridge is the bridge c holds.
func (c *Claim) Bridge() string { return c.bridge }

// Release gives the bridge up: it removes the lock file, then unlocks it.
// It is safe to call more than once, and on a nil Claim.
func (c *Claim) Release() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	var err error
	if samePath(c.f, c.path) {
		err = os.Remove(c.path)
	}
	err = errors.Join(err, c.f.Close())
	c.f = nil
	if err != nil {
		return fmt.Errorf("network: release bridge %s: %w", c.bridge, err)
	}
	return nil
}

// inode is the inode number of path, followed: for /proc/PID/ns/net and
// a pinned namespace, the namespace's identity.
func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}
