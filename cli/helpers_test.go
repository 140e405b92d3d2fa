package cli

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

var update = flag.Bool("update", false, "rewrite cli/testdata/*.golden from the current output")

// testNow is the fixed clock of every test: ages are relative to it.
var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// golden compares got with testdata/NAME.golden, or rewrites the file
// under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `go test ./cli -run '%s' -update` to create it", err, t.Name())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("output differs from %s (-want +got); run with -update if the change is meant:\n%s", path, diff)
	}
}

// testStreams returns streams writing to fresh buffers.
func testStreams() (Streams, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return Streams{In: strings.NewReader(""), Out: &out, Err: &errb}, &out, &errb
}

// isUsage reports whether err is a command-line mistake (exit 2).
func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

// seededFake is a fake API with two functions:
//
//   - hello, deployed three times (3 days, 5 hours and 90 seconds ago),
//     its traffic split 80/20 over the two newest revisions, with four
//     replicas of which one is still unscheduled and one crash-loops;
//   - world, deployed once 45 minutes ago with every field set, and no
//     replicas (scaled to zero);
//   - a crash-looping replica of hello-00003, with a log; the gateways'
//     load of hello; two nodes, whose agent (for logs) is the fake; and a
//     gateway URL.
func seededFake(t *testing.T) *fakeAPI {
	t.Helper()
	f := newFakeAPI(t)
	at := func(d time.Duration) { f.edit(func() { f.now = testNow.Add(-d) }) }

	hello := api.Function{
		Metadata: api.ObjectMeta{Name: "hello", Labels: map[string]string{"team": "web"}},
		Spec: api.FunctionSpec{
			Image: "example.test/hello:v1",
			Env:   []api.EnvVar{{Name: "GREETING", Value: "hi"}},
		},
	}
	at(3*24*time.Hour + time.Hour)
	f.deploy(t, hello)
	at(5 * time.Hour)
	hello.Spec.Image = "example.test/hello:v2"
	f.deploy(t, hello)
	at(90 * time.Second)
	hello.Spec.Image = "example.test/hello:v3"
	hello.Spec.Concurrency = 10
	hello.Spec.Scaling = api.ScalingPolicy{MinScale: 1, MaxScale: 5, Metric: api.MetricRPS, Target: 50}
	f.deploy(t, hello)

	at(45 * time.Minute)
	f.deploy(t, api.Function{
		Metadata: api.ObjectMeta{Name: "world"},
		Spec: api.FunctionSpec{
			Image:       "example.test/world@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Command:     []string{"/bin/world"},
			Args:        []string{"--fast", "--quiet"},
			Env:         []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "two words"}},
			Port:        9090,
			Resources:   api.Resources{CPU: "500m", Memory: "256Mi"},
			Concurrency: 0,
			Timeout:     api.Seconds(30),
			Readiness:   &api.Probe{Path: "/ready", Period: api.Seconds(5)},
			Scaling:     api.ScalingPolicy{ScaleToZeroGrace: api.Seconds(60)},
		},
	})

	f.edit(func() {
		f.tokens = []api.Token{
			{ID: "0a1b2c3d4e5f", Role: "admin", Description: "admin, made at first start", Created: testNow.Add(-30 * 24 * time.Hour)},
			{ID: "1b2c3d4e5f60", Role: "node", Description: "join-token, made at first start", Created: testNow.Add(-30 * 24 * time.Hour)},
			{ID: "2c3d4e5f6071", Role: "gateway", Description: "gateway-token, made at first start", Created: testNow.Add(-30 * 24 * time.Hour)},
		}
		f.newTokenIDs = []string{"3d4e5f607182", "4e5f60718293", "5f60718293a4"}
		f.now = testNow.Add(-time.Minute)
		f.traffic["hello"].Spec.Targets = []api.TrafficTarget{
			{Revision: "hello-00003", Percent: 80},
			{Revision: "hello-00002", Percent: 20},
		}
		f.scales["hello-00001"].Spec.Replicas = 0
		f.scales["hello-00002"].Spec.Replicas = 1
		f.scales["hello-00002"].Status = api.ScaleStatus{Replicas: 1, ReadyReplicas: 1, Mode: "stable"}
		f.scales["hello-00003"].Spec.Replicas = 2
		f.scales["hello-00003"].Status = api.ScaleStatus{Replicas: 2, ReadyReplicas: 1, Mode: "panic", Reason: "burst"}
		f.scales["world-00001"].Spec.Replicas = 0
		replica := func(name, rev, node, ip string, phase api.ReplicaPhase, restarts int32, start string, age time.Duration) {
			f.replicas[name] = &api.Replica{
				Kind: api.KindReplica,
				Metadata: api.ObjectMeta{
					Name: name, Namespace: api.DefaultNamespace, UID: "replica-" + name, ResourceVersion: f.nextRV(),
					CreationTimestamp: testNow.Add(-age),
					Labels:            map[string]string{api.LabelFunction: "hello", api.LabelRevision: rev},
				},
				Spec:   api.ReplicaSpec{Function: "hello", Revision: rev, NodeName: node},
				Status: api.ReplicaStatus{Phase: phase, IP: ip, Port: 8080, Restarts: restarts, StartLatency: start},
			}
		}
		replica("hello-00002-a1b2c", "hello-00002", "node-1", "10.88.0.4", api.ReplicaReady, 0, "84ms", 5*time.Hour)
		replica("hello-00003-d4e5f", "hello-00003", "node-2", "10.88.1.7", api.ReplicaReady, 2, "120ms", 80*time.Second)
		replica("hello-00003-g6h7i", "hello-00003", "", "", api.ReplicaPending, 0, "", 10*time.Second)
		replica("hello-00003-j8k9l", "hello-00003", "node-2", "", api.ReplicaStarting, 3, "", 60*time.Second)
		f.replicas["hello-00003-j8k9l"].Status.Message = "restart: exited with code 2"
		f.logs["hello-00003-j8k9l"] = "starting\n" + strings.Repeat("working\n", 20) + "panic: no config\n\ngoroutine 1 [running]:\nmain.main()\n"
		f.logs["hello-00003-d4e5f"] = "listening on :8080\n"
		f.gatewayURL = "surge.test:8080"
		pinned := "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
		f.revisions["hello-00003"].Spec.ImageDigest = pinned
		f.functions["hello"].Status.ImageDigest = pinned
		f.stats = []api.RevisionRate{
			{Namespace: "default", Function: "hello", Revision: "hello-00002", RPS: 2.25},
			{Namespace: "default", Function: "hello", Revision: "hello-00003", Concurrency: 4, RPS: 10},
		}
	})
	f.addNode("node-1", "2", "4Gi")
	f.addNode("node-2", "2", "4Gi")
	return f
}
