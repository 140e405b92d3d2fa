package containers

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/internal/clock"
)

// capRuntime is a Runtime with only what the log code uses, with the
// given caps.
func capRuntime(t *testing.T, replicaCap, nodeCap int64, keep int) *Runtime {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.LogMaxSize, cfg.LogNodeMaxSize, cfg.LogMaxFiles = replicaCap, nodeCap, keep
	cfg.LogPollInterval = time.Millisecond
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &Runtime{cfg: cfg}
}

// writeLines appends lines from, …, to-1 of replica id, each "ID line N"
// padded to 100 bytes, as its shim would.
func writeLines(t *testing.T, r *Runtime, id string, from, to int) {
	t.Helper()
	var b strings.Builder
	for i := from; i < to; i++ {
		l := fmt.Sprintf("%s line %08d ", id, i)
		b.WriteString(l + strings.Repeat("x", 99-len(l)) + "\n")
	}
	appendFile(t, r.LogPath(id), b.String())
}

// onDisk is the bytes of every file in the logs directory, by replica.
func onDisk(t *testing.T, r *Runtime) (map[string]int64, int64) {
	t.Helper()
	files, err := listLogs(filepath.Join(r.cfg.StateDir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	by, total := map[string]int64{}, int64(0)
	for _, f := range files {
		by[f.id] += f.size
		total += f.size
	}
	return by, total
}

// readLines reads replica id's log as surge logs and the log server do
// (OpenLogs, not following), and returns its line numbers; every line
// must be whole.
func readLines(t *testing.T, r *Runtime, id string) []int {
	t.Helper()
	rc, err := r.OpenLogs(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var nums []int
	sc := bufio.NewScanner(rc)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), id+" line %d ", &n); err != nil || len(sc.Text()) != 99 {
			t.Fatalf("log of %s has a broken line %q", id, sc.Text())
		}
		nums = append(nums, n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return nums
}

// isNewest reports whether nums are the last len(nums) numbers before
// end, in order.
func isNewest(nums []int, end int) bool {
	for i, n := range nums {
		if n != end-len(nums)+i {
			return false
		}
	}
	return true
}

// TestReplicaLogKeepsItsCap is the attack of a replica that writes far
// more than its cap between two passes: afterwards its log holds at most
// the cap, whole lines, its newest ones, in order, and reads back as
// such.
func TestReplicaLogKeepsItsCap(t *testing.T) {
	const cap = 8 << 10
	r := capRuntime(t, cap, 1<<20, 3)
	written := 0
	for round, n := range []int{1000, 10, 30, 500, 25, 21, 21, 21, 70, 3} { // 100 KB at first
		writeLines(t, r, "chatty", written, written+n)
		written += n
		if err := r.enforceLogCaps(); err != nil {
			t.Fatal(err)
		}
		by, _ := onDisk(t, r)
		if by["chatty"] > cap {
			t.Fatalf("round %d: %d bytes on disk, want at most the cap, %d", round, by["chatty"], cap)
		}
		nums := readLines(t, r, "chatty")
		if !isNewest(nums, written) {
			t.Fatalf("round %d: read lines %v, want the newest ones up to %d, in order", round, nums, written-1)
		}
		// A burst keeps its newest lines up to the cap, not one file's
		// worth: the rotated files hold pieces of one to two shares, and
		// the cap's trim drops whole files, so all but two shares of the
		// cap stay used (less a 100-byte line).
		least := min(written, int(cap-2*r.cfg.logFileShare())/100-1)
		if len(nums) < least {
			t.Fatalf("round %d: kept %d lines, want at least %d", round, len(nums), least)
		}
	}
}

// TestNodeLogCapDropsTheOldest is the attack of many replicas that each
// stay within their own cap and together pass the node's: the logs of
// the replicas whose lines are oldest go first, rotated files before live
// ones, and what is kept still reads back.
func TestNodeLogCapDropsTheOldest(t *testing.T) {
	const replicaCap, nodeCap = 8 << 10, 24 << 10
	r := capRuntime(t, replicaCap, 1<<20, 3) // the node's cap comes once every log is written
	t0 := time.Now().Add(-time.Hour)
	ids := make([]string, 8)
	for i := range ids {
		// Replica i wrote its lines at t0+i minutes: replica 0's are the
		// oldest. Each fills its cap (rotated) and leaves a live tail.
		ids[i] = "r" + strconv.Itoa(i)
		writeLines(t, r, ids[i], 0, 200)
		if err := r.enforceLogCaps(); err != nil {
			t.Fatal(err)
		}
		writeLines(t, r, ids[i], 200, 210)
		at := t0.Add(time.Duration(i) * time.Minute)
		for _, p := range append([]string{r.LogPath(ids[i])}, rotatedNames(r.LogPath(ids[i]), 3)...) {
			os.Chtimes(p, at, at) // the live log a second newer than its rotated ones
			at = at.Add(-time.Second)
		}
	}
	r.cfg.LogNodeMaxSize = nodeCap
	before, total := onDisk(t, r)
	if total <= nodeCap || before["r7"] < replicaCap*3/4 {
		t.Fatalf("set-up: %d bytes in all, want past the node's cap, %d, each replica near its own: %v", total, nodeCap, before)
	}
	if err := r.enforceLogCaps(); err != nil {
		t.Fatal(err)
	}
	by, total := onDisk(t, r)
	if total > nodeCap {
		t.Fatalf("%d bytes of logs on the node, want at most its cap, %d: %v", total, nodeCap, by)
	}
	// The newest replicas keep everything; the oldest kept only their
	// live tails.
	for _, id := range []string{"r6", "r7"} {
		if by[id] != before[id] {
			t.Errorf("%s, among the newest, was trimmed from %d to %d bytes: %v", id, before[id], by[id], by)
		}
	}
	for i, id := range ids {
		nums := readLines(t, r, id)
		if !isNewest(nums, 210) {
			t.Errorf("%s reads %v, want its newest lines", id, nums)
		}
		if i > 0 && by[ids[i-1]] > by[id] {
			t.Errorf("%s (older) keeps %d bytes, more than %s's %d: %v", ids[i-1], by[ids[i-1]], id, by[id], by)
		}
	}
	if len(readLines(t, r, "r0")) != 10 {
		t.Errorf("the oldest replica kept more than its live log: %v", by)
	}
}

func TestTrimLogs(t *testing.T) {
	t0 := clock.Epoch
	f := func(id string, index int, size int64, minute int) logFile {
		name := id + ".log"
		if index > 0 {
			name += "." + strconv.Itoa(index)
		}
		return logFile{name: name, id: id, index: index, size: size, modTime: t0.Add(time.Duration(minute) * time.Minute)}
	}
	names := func(fs []logFile) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.name)
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		name                string
		files               []logFile
		replicaCap, nodeCap int64
		maxFiles            int
		remove, truncate    []string
		over                int64
	}{
		{
			name:       "within every cap",
			files:      []logFile{f("a", 0, 10, 5), f("a", 1, 25, 4), f("b", 0, 30, 1)},
			replicaCap: 100, nodeCap: 100, maxFiles: 3,
		},
		{
			name:       "a replica past its cap loses its oldest rotated files",
			files:      []logFile{f("a", 0, 10, 5), f("a", 1, 40, 4), f("a", 2, 40, 3), f("a", 3, 40, 2)},
			replicaCap: 100, nodeCap: 1000, maxFiles: 3,
			remove: []string{"a.log.3"},
		},
		{
			name:       "rotated files past maxFiles go",
			files:      []logFile{f("a", 0, 1, 5), f("a", 1, 1, 4), f("a", 2, 1, 3)},
			replicaCap: 100, nodeCap: 1000, maxFiles: 1,
			remove: []string{"a.log.2"},
		},
		{
			name: "past the node's cap, the oldest rotated files go first, whoever's",
			files: []logFile{
				f("old", 0, 10, 30), f("old", 1, 30, 3), f("old", 2, 30, 2),
				f("new", 0, 10, 31), f("new", 1, 30, 20), f("new", 2, 30, 1),
			},
			replicaCap: 100, nodeCap: 90, maxFiles: 3,
			remove: []string{"new.log.2", "old.log.2"}, over: 50,
		},
		{
			name: "then the live logs written to least recently are emptied",
			files: []logFile{
				f("a", 0, 40, 3), f("a", 1, 40, 1),
				f("b", 0, 40, 2), f("c", 0, 40, 4), f("d", 0, 0, 0),
			},
			replicaCap: 100, nodeCap: 50, maxFiles: 3,
			remove: []string{"a.log.1"}, truncate: []string{"a.log", "b.log"}, over: 110,
		},
		{
			name:       "rotated files without a live log are a stopped replica's",
			files:      []logFile{f("gone", 1, 5, 1), f("gone", 2, 5, 0), f("a", 0, 1, 2)},
			replicaCap: 100, nodeCap: 1000, maxFiles: 3,
			remove: []string{"gone.log.1", "gone.log.2"},
		},
		{
			name:       "a rotation's leftover counts against the node",
			files:      []logFile{{name: "a.log.1.tmp", id: "a", index: 1, tmp: true, size: 60}, f("a", 0, 10, 2), f("a", 1, 30, 1)},
			replicaCap: 100, nodeCap: 80, maxFiles: 3,
			remove: []string{"a.log.1"}, over: 20,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := trimLogs(tt.files, tt.replicaCap, tt.nodeCap, tt.maxFiles)
			if diff := cmp.Diff(tt.remove, names(got.remove)); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.truncate, names(got.truncate)); diff != "" {
				t.Errorf("truncated (-want +got):\n%s", diff)
			}
			if got.nodeOver != tt.over {
				t.Errorf("over the node's cap by %d, want %d", got.nodeOver, tt.over)
			}
		})
	}
}

// TestFollowAcrossATrimmedRotation: a follower that had read part of a
// live log that then grew far past its share goes on after a rotation
// with the lines the rotation kept, in order, never one twice.
func TestFollowAcrossATrimmedRotation(t *testing.T) {
	r := capRuntime(t, 8<<10, 1<<20, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	writeLines(t, r, "f", 0, 5)
	rc, err := r.OpenLogs(ctx, "f", true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	next := func() int {
		t.Helper()
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
		var n int
		if _, err := fmt.Sscanf(l, "f line %d ", &n); err != nil {
			t.Fatalf("broken line %q", l)
		}
		return n
	}
	for want := range 5 {
		if n := next(); n != want {
			t.Fatalf("line %d, want %d", n, want)
		}
	}
	writeLines(t, r, "f", 5, 500) // 50 KB: the rotation keeps 2 KB of it
	if err := r.enforceLogCaps(); err != nil {
		t.Fatal(err)
	}
	writeLines(t, r, "f", 500, 503)
	last := 4
	for last < 502 {
		n := next()
		if n <= last {
			t.Fatalf("line %d after line %d", n, last)
		}
		if last >= 5 && n != last+1 {
			t.Fatalf("line %d after line %d: a kept line was skipped", n, last)
		}
		last = n
	}
}

// TestRotateFileKeepsTheNewestLines covers the edges of the copies a
// rotation keeps: pieces of at most share bytes, newest in .1, each
// beginning at a line unless one line is longer than share, the older
// rotated files moved up past them or dropped.
func TestRotateFileKeepsTheNewestLines(t *testing.T) {
	for _, tt := range []struct {
		in     string
		keep   int
		share  int64
		before []string // .1, .2, … before the rotation
		want   []string // .1, .2, … after
		starts []int64
	}{
		{in: "a\nbb\nccc\n", keep: 1, share: 100, want: []string{"a\nbb\nccc\n"}, starts: []int64{0}},
		{in: "a\nbb\nccc\n", keep: 1, share: 7, want: []string{"bb\nccc\n"}, starts: []int64{2}},
		{in: "a\nbb\nccc\n", keep: 1, share: 6, want: []string{"ccc\n"}, starts: []int64{5}},
		{in: "a\nbb\nccc\n", keep: 1, share: 3, want: []string{"cc\n"}, starts: []int64{6}}, // one line longer than share
		{in: "abcdef", keep: 1, share: 3, want: []string{"def"}, starts: []int64{3}},
		// Pieces of one to two shares: 9 bytes of share 4 make two.
		{in: "a\nbb\nccc\n", keep: 3, share: 4, want: []string{"ccc\n", "a\nbb\n"}, starts: []int64{5, 0}},
		{in: "a\nbb\nccc\n", keep: 2, share: 4, want: []string{"bb\nccc\n"}, starts: []int64{2}},
		{in: "l1\nl2\nl3\nl4\nl5\nl6\n", keep: 3, share: 3, want: []string{"l6\n", "l5\n", "l4\n"}, starts: []int64{15, 12, 9}},
		{
			in: "a\nbb\nccc\n", keep: 3, share: 4, before: []string{"old1\n", "old2\n", "old3\n"},
			want: []string{"ccc\n", "a\nbb\n", "old1\n"}, starts: []int64{5, 0},
		},
		{
			in: "ccc\n", keep: 3, share: 4, before: []string{"old1\n", "old2\n", "old3\n"},
			want: []string{"ccc\n", "old1\n", "old2\n"}, starts: []int64{0},
		},
		{
			in: "bb\nccc\n", keep: 4, share: 4, before: []string{"old1\n", "", "old3\n"},
			want: []string{"bb\nccc\n", "old1\n", "", "old3\n"}, starts: []int64{0},
		},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, "r.log")
		if err := os.WriteFile(p, []byte(tt.in), 0o600); err != nil {
			t.Fatal(err)
		}
		for i, b := range tt.before {
			if b != "" {
				os.WriteFile(p+"."+strconv.Itoa(i+1), []byte(b), 0o600)
			}
		}
		starts, err := rotateFile(p, tt.keep, tt.share)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := 1; i <= tt.keep; i++ {
			b, _ := os.ReadFile(p + "." + strconv.Itoa(i))
			got = append(got, string(b))
		}
		want := append(tt.want, make([]string, tt.keep-len(tt.want))...)
		if diff := cmp.Diff(want, got); diff != "" || !slices.Equal(starts, tt.starts) {
			t.Errorf("rotate %q keep %d share %d before %q: starts %v, want %v; files (-want +got):\n%s",
				tt.in, tt.keep, tt.share, tt.before, starts, tt.starts, diff)
		}
		if b, _ := os.ReadFile(p); len(b) != 0 {
			t.Errorf("live file %q after rotation", b)
		}
		if ents, _ := os.ReadDir(dir); slices.ContainsFunc(ents, func(e os.DirEntry) bool { return strings.HasSuffix(e.Name(), ".tmp") }) {
			t.Errorf("a temporary copy is left: %v", ents)
		}
	}
}
