package benchmarks

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procTree returns pid and its descendants, from /proc/PID/task/*/children
// (nginx's workers are its master's children).
func procTree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pids[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pids[i], t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// treeRSS is the resident memory of pid and its descendants, in bytes,
// from VmRSS in /proc/PID/status.
func treeRSS(pid int) (int64, error) {
	var total int64
	for _, p := range procTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return 0, fmt.Errorf("read memory of process %d: %w", p, err)
		}
		kb, err := parseStatusKB(b, "VmRSS:")
		if err != nil {
			return 0, fmt.Errorf("process %d: %w", p, err)
		}
		total += kb << 10
	}
	return total, nil
}

// parseStatusKB returns the value of a "Name:   123 kB" line of
// /proc/PID/status.
func parseStatusKB(status []byte, name string) (int64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", name, line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s line", name)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Surge runs on.
const clockTicks = 100

// treeCPUTicks is the user and system CPU time pid and its descendants
// used, in clock ticks, from /proc/PID/stat.
func treeCPUTicks(pid int) (int64, error) {
	var total int64
	for _, p := range procTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, fmt.Errorf("read CPU time of process %d: %w", p, err)
		}
		t, err := parseStatTicks(b)
		if err != nil {
			return 0, fmt.Errorf("process %d: %w", p, err)
		}
		total += t
	}
	return total, nil
}

// parseStatTicks returns utime+stime of a /proc/PID/stat line. The command
// name (field 2) may hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// After the name: state(3) ... utime(14) stime(15), so indexes 11, 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times %q %q", f[11], f[12])
	}
	return u + s, nil
}

// cpuTicks is one CPU's time from /proc/stat, in clock ticks.
type cpuTicks struct{ busy, total int64 }

// readCPUTicks returns /proc/stat's times per CPU, keyed "cpu0", "cpu1"...
func readCPUTicks() (map[string]cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, fmt.Errorf("read CPU times: %w", err)
	}
	return parseProcStat(b)
}

// parseProcStat parses the per-CPU lines of /proc/stat: user nice system
// idle iowait irq softirq steal ...; idle and iowait are not busy.
func parseProcStat(b []byte) (map[string]cpuTicks, error) {
	out := map[string]cpuTicks{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var t cpuTicks
		for i, s := range f[1:9] {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			t.total += v
			if i != 3 && i != 4 {
				t.busy += v
			}
		}
		out[f[0]] = t
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("/proc/stat has no per-CPU lines")
	}
	return out, nil
}

// busyPercent is how busy cpu was between two readings.
func busyPercent(before, after map[string]cpuTicks, cpu string) float64 {
	b, a := before[cpu], after[cpu]
	if a.total <= b.total {
		return 0
	}
	return 100 * float64(a.busy-b.busy) / float64(a.total-b.total)
}

// machineTaskTicks is the user and system time all tasks used, summed
// over CPUs, from the "cpu" line of /proc/stat. Interrupt time is left
// out: it is not charged to tasks either.
func machineTaskTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU times: %w", err)
	}
	return parseTaskTicks(b)
}

func parseTaskTicks(b []byte) (int64, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat starts with %q", line)
	}
	var t int64
	for _, s := range f[1:4] { // user nice system
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		t += v
	}
	return t, nil
}

// cpuMeter tells a run that shared the machine with other work: it
// counts the CPU time all tasks used during the run, less what the
// benchmark's own processes (and this one, where the open-loop generator
// runs) used.
type cpuMeter struct {
	pids   []int
	start  time.Time
	tasks0 int64
	ours0  int64
}

func startCPUMeter(pids ...int) (*cpuMeter, error) {
	m := &cpuMeter{pids: append(pids, os.Getpid()), start: time.Now()}
	var err error
	if m.tasks0, err = machineTaskTicks(); err != nil {
		return nil, err
	}
	if m.ours0, err = m.ours(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *cpuMeter) ours() (int64, error) {
	var t int64
	for _, p := range m.pids {
		n, err := treeCPUTicks(p)
		if err != nil {
			return 0, err
		}
		t += n
	}
	return t, nil
}

// foreign returns the CPU time other work used since the meter started,
// in percent of one core. extra is the ticks of our processes that
// exited meanwhile (wrk), which /proc no longer shows.
func (m *cpuMeter) foreign(extra int64) (float64, error) {
	tasks, err := machineTaskTicks()
	if err != nil {
		return 0, err
	}
	ours, err := m.ours()
	if err != nil {
		return 0, err
	}
	other := (tasks - m.tasks0) - (ours - m.ours0) - extra
	return max(0, 100*float64(other)/clockTicks/time.Since(m.start).Seconds()), nil
}
