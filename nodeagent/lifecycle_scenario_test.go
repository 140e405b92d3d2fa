package nodeagent

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/internal/clock"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata/lifecycle.txt")

// TestLifecycleScenarios runs the scenarios of testdata/lifecycle.txt
// through transition, under testPolicy, and compares the trace it gives
// with the one written below each scenario's "----". A scenario is a
// "new fresh" or "new adopted" line (optionally "restarts=N"), then one
// event a line: the time since the first as a Go duration, the event
// (ready, start-failed, probe-ok, probe-failed, exited, waited, cancelled)
// and, for failures and exits, why; "ready unchanged" is an adopted
// container whose status already says Ready. A "new" line that has
// actions (an adoption's) is traced too. With -update the traces are
// rewritten from what transition does.
func TestLifecycleScenarios(t *testing.T) {
	path := filepath.Join("testdata", "lifecycle.txt")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for i, block := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
		input, want, _ := strings.Cut(block, "\n----")
		got := runScenario(t, i+1, input)
		if !*update && strings.TrimSpace(want) != strings.TrimSpace(got) {
			t.Errorf("scenario %d (-want +got):\n%s", i+1, cmp.Diff(strings.TrimSpace(want), strings.TrimSpace(got)))
		}
		if i > 0 {
			out.WriteString("\n")
		}
		out.WriteString(input + "\n----\n" + got)
	}
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runScenario returns the trace of the scenario numbered n.
func runScenario(t *testing.T, n int, input string) string {
	t.Helper()
	var (
		m     lifecycle
		begun bool
		trace strings.Builder
	)
	for _, line := range strings.Split(input, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if f[0] == "new" {
			var restarts int32
			if len(f) > 2 {
				if _, err := fmt.Sscanf(f[2], "restarts=%d", &restarts); err != nil {
					t.Fatalf("scenario %d: %q: %v", n, line, err)
				}
			}
			var acts []action
			m, acts = newLifecycle(f[1] == "adopted", restarts)
			begun = true
			if len(acts) > 0 {
				writeTrace(&trace, line, m, acts)
			}
			continue
		}
		if !begun || len(f) < 2 {
			t.Fatalf("scenario %d: %q: want a new line first, then TIME EVENT [WHY]", n, line)
		}
		d, err := time.ParseDuration(f[0])
		if err != nil {
			t.Fatalf("scenario %d: %q: %v", n, line, err)
		}
		ev := event{kind: -1, at: clock.Epoch.Add(d), why: strings.Join(f[2:], " ")}
		for k := range eventNames {
			if strings.ReplaceAll(eventNames[k], " ", "-") == f[1] {
				ev.kind = eventKind(k)
			}
		}
		if ev.kind < 0 {
			t.Fatalf("scenario %d: %q: unknown event %q", n, line, f[1])
		}
		if ev.kind == evReady && ev.why == "unchanged" {
			ev.why, ev.unchanged = "", true
		}
		var acts []action
		m, acts = transition(m, ev, testPolicy)
		writeTrace(&trace, f[0]+" "+f[1], m, acts)
	}
	return trace.String()
}

// writeTrace writes one line of a trace: what happened, the state it led
// to, and the actions.
func writeTrace(trace *strings.Builder, what string, m lifecycle, acts []action) {
	fmt.Fprintf(trace, "%s -> %s restarts=%d", what, m.state, m.restarts)
	if m.state == stateBackingOff {
		fmt.Fprintf(trace, " wait=%s", m.wait)
	}
	for i, a := range acts {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		trace.WriteString(sep + a.String())
	}
	trace.WriteString("\n")
}
