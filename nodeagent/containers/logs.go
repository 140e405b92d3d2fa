package containers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/surgeplatform/surge/internal/clock"
)

// LogPath is the file replica id's stdout and stderr are appended to, by
// its shim (not the agent). Rotated files are LogPath(id)+".1" (newest)
// to ".N". Together they hold at most Config.LogMaxSize bytes, and the
// logs of every replica on the node at most Config.LogNodeMaxSize (as
// RotateLogs enforces them).
func (r *Runtime) LogPath(id string) string {
	return filepath.Join(r.cfg.StateDir, "logs", id+".log")
}

func (r *Runtime) removeLogs(id string) error {
	p := r.LogPath(id)
	// Under the lock a rotation holds: none recreates a copy after this.
	ls := r.logState(p)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	r.logStates.Delete(p)
	var errs []error
	rotated := rotatedNames(p, r.cfg.LogMaxFiles+1)
	files := []string{p}
	for _, f := range rotated {
		files = append(files, f, f+".tmp")
	}
	for _, f := range files {
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

// RotateLogs enforces the replica logs' caps every
// Config.LogRotateInterval until ctx ends (see enforceLogCaps), then
// returns ctx's error. Errors on single files are logged, not returned.
func (r *Runtime) RotateLogs(ctx context.Context) error {
	for {
		if !clock.Sleep(ctx, r.cfg.Clock, r.cfg.LogRotateInterval) {
			return ctx.Err()
		}
		if err := r.enforceLogCaps(); err != nil {
			r.cfg.Log.Warn("rotate replica logs", "err", err)
		}
	}
}

// logFileShare is the size past which a replica's live log is rotated:
// its cap shared by the live file and the rotated ones, so that none holds
// more than its share and together they hold at most the cap.
func (c Config) logFileShare() int64 { return c.LogMaxSize / int64(c.LogMaxFiles+1) }

// enforceLogCaps is one pass over the logs directory: it rotates every
// live log past its share of Config.LogMaxSize (keeping its newest lines),
// then removes what passes the caps (trimLogs): a replica's oldest rotated
// files past LogMaxSize, then the node's oldest rotated files past
// LogNodeMaxSize and, if that is not enough, the live logs written to
// longest ago. Between two passes a replica can write past its cap: at
// most what it writes in one LogRotateInterval.
func (r *Runtime) enforceLogCaps() error {
	dir := filepath.Join(r.cfg.StateDir, "logs")
	files, err := listLogs(dir)
	if err != nil {
		return err
	}
	var errs []error
	share := r.cfg.logFileShare()
	for _, f := range files {
		switch {
		case f.tmp:
			// A copy a rotation left half made: rotations run in this
			// goroutine only, so none is under way.
			err = os.Remove(filepath.Join(dir, f.name))
		case f.index == 0 && f.size >= share:
			err = r.rotate(filepath.Join(dir, f.name))
		default:
			continue
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if files, err = listLogs(dir); err != nil {
		return errors.Join(append(errs, err)...)
	}
	plan := trimLogs(files, r.cfg.LogMaxSize, r.cfg.LogNodeMaxSize, r.cfg.LogMaxFiles)
	for _, f := range plan.remove {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, f := range plan.truncate {
		if err := r.truncateLive(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if over := plan.nodeOver > 0; over != r.logsOverNodeCap.Swap(over) {
		if over {
			r.cfg.Log.Warn("replica logs passed the node's cap; dropping the oldest until they fit",
				"cap", r.cfg.LogNodeMaxSize, "over", plan.nodeOver, "files_removed", len(plan.remove), "live_logs_emptied", len(plan.truncate))
		} else {
			r.cfg.Log.Info("replica logs are within the node's cap again", "cap", r.cfg.LogNodeMaxSize)
		}
	}
	return errors.Join(errs...)
}

// logFile is one file of the logs directory: a replica's live log
// (ID.log, index 0), one of its rotated logs (ID.log.N, index N), or a
// rotation's temporary copy (tmp).
type logFile struct {
	name, id string
	index    int
	tmp      bool
	size     int64
	modTime  time.Time // when its newest line was written
}

// listLogs lists the logs directory's files, in name order.
func listLogs(dir string) ([]logFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []logFile
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		f := logFile{name: e.Name(), size: info.Size(), modTime: info.ModTime()}
		base, tmp := strings.CutSuffix(f.name, ".tmp")
		f.tmp = tmp
		if id, ok := strings.CutSuffix(base, ".log"); ok {
			f.id = id
		} else if i := strings.LastIndex(base, ".log."); i > 0 {
			n, err := strconv.Atoi(base[i+len(".log."):])
			if err != nil || n < 1 {
				continue
			}
			f.id, f.index = base[:i], n
		} else {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// logTrim is what trimLogs decides.
type logTrim struct {
	remove   []logFile // rotated logs to delete
	truncate []logFile // live logs to empty
	// nodeOver is how far past the node's cap the logs were once each
	// replica was within its own; 0 when within.
	nodeOver int64
}

// trimLogs decides, from the files of the logs directory, which go so
// that every replica keeps at most replicaCap bytes and the node at most
// nodeCap, oldest first: rotated files without a live log (a replica
// stopped as its log was rotated), a replica's rotated files past
// maxFiles and, while it is over its cap, its oldest rotated ones; then,
// while the node
// is over its cap, the rotated files whose newest line is oldest, whoever
// they belong to, and after them the live logs least recently written
// (emptied: their writer holds them open). It does no I/O.
func trimLogs(files []logFile, replicaCap, nodeCap int64, maxFiles int) logTrim {
	var (
		plan  logTrim
		byID  = map[string][]logFile{}
		total int64
	)
	for _, f := range files {
		total += f.size
		if !f.tmp {
			byID[f.id] = append(byID[f.id], f)
		}
	}
	var rotated, live []logFile // what is kept, as the node's candidates
	for _, fs := range byID {
		var sum int64
		for _, f := range fs {
			sum += f.size
		}
		// Oldest first: the highest index is the oldest rotation; the
		// live log, index 0, goes last.
		slices.SortFunc(fs, func(a, b logFile) int { return b.index - a.index })
		orphans := fs[len(fs)-1].index > 0
		for _, f := range fs {
			if f.index > 0 && (orphans || f.index > maxFiles || sum > replicaCap) {
				plan.remove = append(plan.remove, f)
				sum -= f.size
				total -= f.size
				continue
			}
			if f.index > 0 {
				rotated = append(rotated, f)
			} else {
				live = append(live, f)
			}
		}
	}
	if total <= nodeCap {
		return plan
	}
	plan.nodeOver = total - nodeCap
	oldestFirst := func(a, b logFile) int {
		if c := a.modTime.Compare(b.modTime); c != 0 {
			return c
		}
		if a.index != b.index {
			return b.index - a.index
		}
		return strings.Compare(a.name, b.name)
	}
	slices.SortFunc(rotated, oldestFirst)
	slices.SortFunc(live, oldestFirst)
	for _, f := range rotated {
		if total <= nodeCap {
			return plan
		}
		plan.remove = append(plan.remove, f)
		total -= f.size
	}
	for _, f := range live {
		if total <= nodeCap {
			return plan
		}
		if f.size > 0 {
			plan.truncate = append(plan.truncate, f)
			total -= f.size
		}
	}
	return plan
}

// logState orders rotations of one log file against the Runtime's
// followers of it: a follower reads under the read lock and, seeing gen
// changed, knows the live file was truncated, however much was written to
// it since; comparing sizes alone cannot tell when the file grew past the
// follower's offset again before its next poll.
type logState struct {
	mu  sync.RWMutex
	gen uint64 // rotations (and truncations) so far
	// starts are the offsets in the live file, before the last rotation,
	// where its copies path.1, path.2, … begin (newest first); what lies
	// before the last was dropped. Empty when the last change kept no
	// copy.
	starts []int64
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
	var err error
	ls.starts, err = rotateFile(path, r.cfg.LogMaxFiles, r.cfg.logFileShare())
	return err
}

// truncateLive empties the live log at path, keeping no copy: what the
// node's cap takes when rotated files are not enough.
func (r *Runtime) truncateLive(path string) error {
	ls := r.logState(path)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.gen++
	ls.starts = nil
	return os.Truncate(path, 0)
}

// rotateFile rotates path by copy and truncate: the shim holds path open
// (with O_APPEND, so after the truncation it writes at the new end) and
// cannot be told to reopen a renamed file. It copies the newest lines, at
// most keep × share bytes of them, into path.1 (the newest), path.2 …:
// pieces of one to two shares that begin at a line, as many as fit (a
// replica can write far more than its cap between two passes, and a
// burst is kept in pieces that age out one by one). Older rotated files
// move up as many places; those past keep and the older lines of path
// are dropped. It returns the offsets in path where the copies begin,
// newest first. Bytes written between the copy and the truncation are
// lost: a known cost of copy-truncate, bounded by the copy's duration.
// keep 0 only truncates.
func rotateFile(path string, keep int, share int64) ([]int64, error) {
	var starts []int64
	if keep > 0 {
		var err error
		if starts, err = copyNewest(path, keep, share); err != nil {
			return nil, fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	if err := os.Truncate(path, 0); err != nil {
		return nil, fmt.Errorf("rotate %s: %w", path, err)
	}
	return starts, nil
}

// copyNewest is rotateFile's copy: it cuts path's newest keep × share
// bytes into pieces at line starts, moves the rotated files up by the
// number of pieces, and writes the pieces as path.1 (newest) … path.n.
func copyNewest(path string, keep int, share int64) ([]int64, error) {
	in, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	from, err := lineStart(in, max(size-int64(keep)*share, 0), size)
	if err != nil {
		return nil, err
	}
	// Equal pieces, each at least a share (but when the whole is less),
	// at most keep of them.
	n := int64(min(max((size-from)/share, 1), int64(keep)))
	starts := []int64{from}
	for i := int64(1); i < n; i++ {
		b, err := lineStart(in, from+i*(size-from)/n, size)
		if err != nil {
			return nil, err
		}
		if b > starts[0] {
			starts = append([]int64{b}, starts...)
		}
	}
	names := rotatedNames(path, keep)
	for i := keep; i >= 1; i-- {
		old := names[i-1]
		if i+len(starts) > keep {
			err = os.Remove(old)
		} else {
			err = os.Rename(old, names[i+len(starts)-1])
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	for k, start := range starts {
		// The newest piece takes what was written since the stat too, up
		// to a share more; the others end where the newer one begins.
		n := size - start + share
		if k > 0 {
			n = starts[k-1] - start
		}
		if err := copyRange(in, start, n, names[k]); err != nil {
			return nil, err
		}
	}
	return starts, nil
}

// copyRange copies at most n bytes of in from off to dst, through a
// temporary file, so that dst is whole or absent.
func copyRange(in io.ReaderAt, off, n int64, dst string) error {
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(out, io.NewSectionReader(in, off, n))
	if err := errors.Join(cerr, out.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// lineStart returns the first offset at or after from, and before end,
// where a line of f begins; from itself when no line begins there.
func lineStart(f io.ReaderAt, from, end int64) (int64, error) {
	if from == 0 {
		return 0, nil
	}
	buf := make([]byte, 32<<10)
	// The byte before from ends a line, or the line goes on past from.
	for off := from - 1; off < end; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			if start := off + int64(i) + 1; start < end {
				return start, nil
			}
			return from, nil
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return from, nil
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
		// What this reader had not read yet is in the copies the
		// rotation kept: the one holding pos from there on, then the
		// newer ones. After more than one rotation since, pos means
		// nothing: the last one's copies are read whole.
		pos := l.pos
		if l.state.gen != l.gen+1 {
			pos = 0
		}
		l.gen = l.state.gen
		starts := l.state.starts
		for k := len(starts); k >= 1; k-- {
			if k > 1 && pos >= starts[k-2] {
				continue // read already
			}
			f, err := os.Open(l.path + "." + strconv.Itoa(k))
			if err != nil {
				continue
			}
			if _, err := f.Seek(max(pos-starts[k-1], 0), io.SeekStart); err != nil {
				f.Close()
				continue
			}
			l.old = append(l.old, f)
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
