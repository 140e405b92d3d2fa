package autoscaler

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the decider's output")

// TestScripts replays the scenarios of testdata/*.txt through a Decider and
// compares its decisions, logged whenever they change, with the .golden
// file next to each. A scenario is a list of lines:
//
//	config knative|surge        the Config (surge = DefaultConfig)
//	policy KEY=VALUE...         cc, min, max
//	load FROM-TO KEY=VALUE...   conc, queued, req, cpu for seconds FROM..TO
//	every PERIOD FROM-TO KEY=VALUE...  the same load every PERIOD seconds
//	run TO                      tick every second up to TO (exclusive)
//
// Replicas follow each decision at once. Run with -update to rewrite the
// golden files after a deliberate change, and review the diff.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			got := runScript(t, file)
			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("decisions mismatch (-%s +got):\n%s", golden, diff)
			}
		})
	}
}

type loadRule struct {
	from, to, every int
	s               Sample
}

func runScript(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := DefaultConfig()
	var pol Policy
	var rules []loadRule
	var d *Decider
	var out strings.Builder
	var last string
	sec, ready := 0, 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := func(err error) { t.Fatalf("%s:%d: %v", file, n, err) }
		switch fields[0] {
		case "config":
			switch fields[1] {
			case "knative":
				cfg = knativeConfig()
			case "surge":
				cfg = DefaultConfig()
			default:
				bad(fmt.Errorf("unknown config %q", fields[1]))
			}
		case "policy":
			kv := keyValues(t, fields[1:])
			pol = Policy{ContainerConcurrency: int(kv["cc"]), MinReplicas: int(kv["min"]), MaxReplicas: int(kv["max"])}
		case "load", "every":
			r := loadRule{every: 1}
			rest := fields[1:]
			if fields[0] == "every" {
				v, err := strconv.Atoi(rest[0])
				if err != nil {
					bad(err)
				}
				r.every, rest = v, rest[1:]
			}
			a, b, ok := strings.Cut(rest[0], "-")
			var err1, err2 error
			r.from, err1 = strconv.Atoi(a)
			r.to, err2 = strconv.Atoi(b)
			if !ok || err1 != nil || err2 != nil {
				bad(fmt.Errorf("want FROM-TO, got %q", rest[0]))
			}
			kv := keyValues(t, rest[1:])
			r.s = Sample{Concurrency: kv["conc"], Queued: kv["queued"], Requests: kv["req"], CPU: kv["cpu"]}
			rules = append(rules, r)
		case "run":
			to, err := strconv.Atoi(fields[1])
			if err != nil {
				bad(err)
			}
			if d == nil {
				if d, err = NewDecider(cfg, pol); err != nil {
					bad(err)
				}
			}
			for ; sec < to; sec++ {
				var s Sample
				for _, r := range rules {
					if sec >= r.from && sec <= r.to && (sec-r.from)%r.every == 0 {
						s = r.s
					}
				}
				d.Record(at(sec), s)
				dec := d.Scale(at(sec), ready)
				ready = dec.Desired
				line := fmt.Sprintf("desired=%d reason=%s panic=%t keep=%s", dec.Desired, dec.Reason, dec.Panic, predString(dec.Prediction))
				if line != last {
					fmt.Fprintf(&out, "t=%-5d %s\n", sec, line)
					last = line
				}
			}
		default:
			bad(fmt.Errorf("unknown command %q", fields[0]))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func predString(p Prediction) string {
	if p == (Prediction{}) {
		return "off"
	}
	s := p.Kind.String()
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"prewarm", p.Prewarm}, {"until", p.Until}, {"linger", p.Linger}, {"repeat-from", p.RepeatFrom}, {"repeat-until", p.RepeatUntil}} {
		if f.d != 0 {
			s += fmt.Sprintf(",%s=%v", f.name, f.d)
		}
	}
	return s
}

func keyValues(t *testing.T, fields []string) map[string]float64 {
	t.Helper()
	kv := map[string]float64{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		x, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			t.Fatalf("want KEY=NUMBER, got %q", f)
		}
		kv[k] = x
	}
	return kv
}
