package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WrkResult is what B1 reads from wrk's output.
type WrkResult struct {
	Requests int64
	Elapsed  time.Duration
	RPS      float64
	// P50, P99 come from --latency's distribution.
	P50, P99 time.Duration
	// SocketErrors sums connect, read, write and timeout errors; Non2xx
	// counts answers other than 2xx and 3xx.
	SocketErrors, Non2xx int64
}

// wrkArgs is the command line of one closed-loop run: one thread (wrk is
// pinned to one core), conns connections, the Host header routing to the
// function.
func wrkArgs(cpu string, threads, conns int, d time.Duration, host, url string) []string {
	return []string{"taskset", "-c", cpu, "wrk",
		"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns),
		"-d" + strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s",
		"--timeout", "5s", "--latency", "-H", "Host: " + host, url}
}

// runWrk runs wrk and parses its report. It also returns the CPU time wrk
// used, in clock ticks.
func runWrk(ctx context.Context, args []string) (WrkResult, int64, error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return WrkResult{}, 0, fmt.Errorf("run %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errOut.Bytes()))
	}
	var ticks int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		us := ru.Utime.Sec*1e6 + ru.Utime.Usec + ru.Stime.Sec*1e6 + ru.Stime.Usec
		ticks = us * clockTicks / 1e6
	}
	r, err := parseWrk(out.String())
	return r, ticks, err
}

// parseWrk parses wrk 4's report, as printed with --latency.
func parseWrk(out string) (WrkResult, error) {
	var r WrkResult
	var haveRPS, haveReqs bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk requests/sec %q: %w", f[1], err)
			}
			r.RPS, haveRPS = v, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			// "260000 requests in 5.00s, 30.00MB read"
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk request count %q: %w", f[0], err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, err
			}
			r.Requests, r.Elapsed, haveReqs = n, d, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		case strings.HasPrefix(line, "Socket errors:"):
			// "Socket errors: connect 0, read 12, write 0, timeout 3"
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk socket errors %q: %w", line, err)
				}
				r.SocketErrors += n
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk non-2xx %q: %w", line, err)
			}
			r.Non2xx = n
		}
	}
	if !haveRPS || !haveReqs || r.P50 == 0 {
		return r, errors.New("wrk output has no Requests/sec, request count or latency distribution")
	}
	return r, nil
}

// parseWrkDuration parses wrk's durations: "812.00us", "1.23ms", "5.00s",
// "1.50m".
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"h", time.Hour}, {"s", time.Second}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				break
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q not understood", s)
}
