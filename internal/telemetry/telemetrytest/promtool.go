// Package telemetrytest checks metrics as Prometheus' own linter does:
// `promtool check metrics` (Debian's prometheus package) on what a
// registry or an endpoint serves.
package telemetrytest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// RequirePromtool returns promtool's path. Without it the test is skipped,
// or fails under CI=true, where scripts/setup.sh installs it.
func RequirePromtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	msg := "needs promtool (apt-get install prometheus; scripts/setup.sh bench installs it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// CheckText runs `promtool check metrics` on an exposition in the text
// format and fails t with each problem it reports, naming where the text
// came from.
func CheckText(t testing.TB, from string, text []byte) {
	t.Helper()
	cmd := exec.Command(RequirePromtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s: %v\n%s", from, err, out)
	}
}

// Check gathers g, requires it to hold every family named in want, and
// runs promtool on its text exposition.
func Check(t testing.TB, from string, g prometheus.Gatherer, want ...string) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather %s: %v", from, err)
	}
	have := map[string]bool{}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", from, err)
		}
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s lacks %s", from, strings.Join(missing, ", "))
	}
	CheckText(t, from, buf.Bytes())
}
