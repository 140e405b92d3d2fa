package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// LogPath is the file replica id's stdout and stderr are appended to, by
// its shim (not the agent). Rotated files are LogPath(id)+".1" (newest)
// to ".N".
func (r *Runtime) LogPath(id string) string {
	return filepath.Join(r.cfg.StateDir, "logs", id+".log")
}

func (r *Runtime) removeLogs(id string) error {
	p := r.LogPath(id)
	r.logStates.Delete(p)
	var errs []error
	for _, f := range append([]string{p}, rotatedNames(p, r.cfg.LogMaxFiles+1)...) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rotatedNames returns path.1 … path.n, newest first.
func rotatedNames(path string, n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = path + "." + strconv.Itoa(i+1)
	}
	return out
}

// fileIDs returns the replica ids that have a log file or a replica dir.
func (r *Runtime) fileIDs() []string {
	var ids []string
	if ents, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "logs")); err == nil {
		for _, e := range ents {
			if id, ok := strings.CutSuffix(e.Name(), ".log"); ok {
				ids = append(ids, id)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "replicas")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

// RotateLogs rotates replica logs past Config.LogMaxSize every
// Config.LogRotateInterval until ctx ends, then returns ctx's error.
// Errors on single files are logged, not returned.
func (r *Runtime) RotateLogs(ctx context.Context) error {
	for {
		if !clock.Sleep(ctx, r.cfg.Clock, r.cfg.LogRotateInterval) {
			return ctx.Err()
		}
		if err := r.rotateAll(); err != nil {
			r.cfg.Log.Warn("rotate replica logs", "err", err)
		}
	}
}

// rotateAll rotates every live log file over the size limit.
func (r *Runtime) rotateAll() error {
	dir := filepath.Join(r.cfg.StateDir, "logs")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() < r.cfg.LogMaxSize {
			continue
		}
		if err := r.rotate(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logState orders rotations of one log file against the Runtime's
// followers of it: a follower reads under the read lock and, seeing gen
// changed, knows the live file was truncated, however much was written to
// it since; comparing sizes alone cannot tell when the file grew past the
// follower's offset again before its next poll.
type logState struct {
	mu  sync.RWMutex
	gen uint64 // rotations so far
}

func (r *Runtime) logState(path string) *logState {
	v, _ := r.logStates.LoadOrStore(path, &logState{})
	return v.(*logState)
}

// rotate rotates the log file at path (see rotateFile) with its followers
// held off.
func (r *Runtime) rotate(path string) error {
	ls := r.logState(path)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.gen++
	return rotateFile(path, r.cfg.LogMaxFiles)
}

// rotateFile rotates path by copy and truncate: the shim holds path open
// (with O_APPEND, so after the truncation it writes at the new end) and
// cannot be told to reopen a renamed file. Bytes written between the copy
// and the truncation are lost: a known cost of copy-truncate, bounded by
// the copy's duration. path.1 … path.keep hold the older content, newest
// first; keep 0 only truncates.
func rotateFile(path string, keep int) error {
	if keep > 0 {
		names := rotatedNames(path, keep)
		for i := keep - 1; i > 0; i-- {
			if err := os.Rename(names[i-1], names[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("rotate %s: %w", path, err)
			}
		}
		if err := copyFile(path, names[0]); err != nil {
			return fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	if err := os.Truncate(path, 0); err != nil {
		return fmt.Errorf("rotate %s: %w", path, err)
	}
	return nil
}

// copyFile copies src to dst through a temporary file, so dst is whole or
// absent.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(out, in)
	if err := errors.Join(cerr, out.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// OpenLogs returns replica id's log: the rotated files, oldest first, then
// the live file. With follow it then keeps reading like tail -f: it waits
// for new bytes (polling every Config.LogPollInterval), continues from
// the rotated copy and then the start of the live file when a rotation
// truncates it, and ends with io.EOF when the replica's log is removed
// (Stop). Reads end with ctx's error when ctx ends, and Close ends them
// too. It returns ErrNotFound when id has no log file.
func (r *Runtime) OpenLogs(ctx context.Context, id string, follow bool) (io.ReadCloser, error) {
	path := r.LogPath(id)
	live, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("logs of replica %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("logs of replica %s: %w", id, err)
	}
	ls := r.logState(path)
	ls.mu.RLock()
	gen := ls.gen
	ls.mu.RUnlock()
	lr := &logReader{
		ctx:    ctx,
		state:  ls,
		gen:    gen,
		clock:  r.cfg.Clock,
		poll:   r.cfg.LogPollInterval,
		path:   path,
		live:   live,
		follow: follow,
		closed: make(chan struct{}),
	}
	names := rotatedNames(path, r.cfg.LogMaxFiles)
	for i := len(names) - 1; i >= 0; i-- {
		if f, err := os.Open(names[i]); err == nil {
			lr.old = append(lr.old, f)
		}
	}
	return lr, nil
}

// logReader reads a replica's rotated logs, then its live log, following
// it if asked. Read and Close may be called from different goroutines.
type logReader struct {
	ctx    context.Context
	clock  clock.Clock
	poll   time.Duration
	path   string
	follow bool
	closed chan struct{}
	state  *logState

	mu       sync.Mutex // guards the fields below; not held while waiting
	gen      uint64     // state.gen when pos was last valid
	isClosed bool
	old      []*os.File // rotated files still to read, oldest first
	live     *os.File
	pos      int64 // read offset in live
}

func (l *logReader) Read(p []byte) (int, error) {
	for {
		n, err, wait := l.step(p)
		if !wait {
			return n, err
		}
		if err := l.sleep(); err != nil {
			return 0, err
		}
	}
}

// sleep waits one poll interval, or until ctx ends or the reader is
// closed (then it returns why).
func (l *logReader) sleep() error {
	t := l.clock.NewTimer(l.poll)
	defer t.Stop()
	select {
	case <-l.ctx.Done():
		return l.ctx.Err()
	case <-l.closed:
		return os.ErrClosed
	case <-t.Chan():
		return nil
	}
}

// step reads what is there; wait reports that there is nothing yet and
// the reader should poll again.
func (l *logReader) step(p []byte) (n int, err error, wait bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed {
		return 0, os.ErrClosed, false
	}
	if err := l.ctx.Err(); err != nil {
		return 0, err, false
	}
	for {
		for len(l.old) > 0 {
			n, err := l.old[0].Read(p)
			if n > 0 {
				return n, nil, false
			}
			if err != nil && err != io.EOF {
				return 0, err, false
			}
			l.old[0].Close()
			l.old = l.old[1:]
		}
		n, err, rotated := l.readLive(p)
		if rotated {
			continue
		}
		if n > 0 {
			return n, nil, false
		}
		if err != nil && err != io.EOF {
			return 0, err, false
		}
		if !l.follow {
			return 0, io.EOF, false
		}
		st, err := os.Stat(l.path)
		if errors.Is(err, fs.ErrNotExist) {
			return 0, io.EOF, false // the replica was stopped
		}
		if err != nil {
			return 0, err, false
		}
		if st.Size() >= l.pos {
			return 0, nil, true
		}
		// Truncated by someone else than this Runtime: start over.
		if _, err := l.live.Seek(0, io.SeekStart); err != nil {
			return 0, err, false
		}
		l.pos = 0
	}
}

// readLive reads the live file unless a rotation happened since the last
// read; then it queues the unread tail of the rotated copy (at the same
// offset) and rewinds the live file, and reports rotated.
func (l *logReader) readLive(p []byte) (n int, err error, rotated bool) {
	l.state.mu.RLock()
	defer l.state.mu.RUnlock()
	if l.state.gen != l.gen {
		l.gen = l.state.gen
		if f, err := os.Open(l.path + ".1"); err == nil {
			if _, err := f.Seek(l.pos, io.SeekStart); err == nil {
				l.old = append(l.old, f)
			} else {
				f.Close()
			}
		}
		if _, err := l.live.Seek(0, io.SeekStart); err != nil {
			return 0, err, false
		}
		l.pos = 0
		return 0, nil, true
	}
	n, err = l.live.Read(p)
	l.pos += int64(n)
	return n, err, false
}

// Close ends pending and future reads and closes the files.
func (l *logReader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed {
		return nil
	}
	l.isClosed = true
	close(l.closed)
	for _, f := range l.old {
		f.Close()
	}
	l.old = nil
	return l.live.Close()
}
