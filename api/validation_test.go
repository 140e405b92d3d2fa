package api_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

// validFunction is a function every field of which is set and valid; each
// case changes one thing.
func validFunction() *api.Function {
	return &api.Function{
		Metadata: api.ObjectMeta{
			Name:      "hello",
			Namespace: "default",
			Labels:    map[string]string{"team": "web", api.LabelFunction: "hello"},
		},
		Spec: api.FunctionSpec{
			Image:       "example.test/hello:v1",
			Command:     []string{"/hello"},
			Args:        []string{"--verbose"},
			Env:         []api.EnvVar{{Name: "GREETING", Value: "hi"}, {Name: "_DEBUG", Value: ""}},
			Port:        8080,
			Resources:   api.Resources{CPU: "250m", Memory: "128Mi"},
			Concurrency: 10,
			Timeout:     dur("30s"),
			Readiness:   &api.Probe{Path: "/healthz", Period: dur("10s")},
			Scaling: api.ScalingPolicy{
				MinScale: 1, MaxScale: 10, Metric: api.MetricConcurrency, Target: 7, ScaleToZeroGrace: dur("30s"),
			},
		},
	}
}

// dur is a Duration literal; s must parse.
func dur(s string) api.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return api.Duration{Duration: d}
}

// fields returns the field paths of a validation error, in order; nil for
// no error. It fails the test when err is not FieldErrors.
func fields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var fe api.FieldErrors
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not api.FieldErrors", err, err)
	}
	out := make([]string, len(fe))
	for i, e := range fe {
		out[i] = e.Field
	}
	return out
}

func TestValidateFunction(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	manyLabels := map[string]string{}
	for i := range api.MaxLabels + 1 {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	manyEnv := make([]api.EnvVar, api.MaxEnvVars+1)
	for i := range manyEnv {
		manyEnv[i] = api.EnvVar{Name: fmt.Sprintf("V%d", i)}
	}

	tests := []struct {
		name   string
		change func(*api.Function)
		want   []string // field paths, in order; nil means valid
	}{
		{"valid", func(*api.Function) {}, nil},
		{"minimal", func(f *api.Function) { f.Spec = api.FunctionSpec{Image: "x"}; f.Metadata = api.ObjectMeta{Name: "a"} }, nil},

		// metadata.name: a DNS-1123 label.
		{"name one letter", func(f *api.Function) { f.Metadata.Name = "a" }, nil},
		{"name with digits and hyphens", func(f *api.Function) { f.Metadata.Name = "hello-world-2" }, nil},
		{"name 63 chars", func(f *api.Function) { f.Metadata.Name = strings.Repeat("a", 63) }, nil},
		{"name empty", func(f *api.Function) { f.Metadata.Name = "" }, []string{"metadata.name"}},
		{"name uppercase", func(f *api.Function) { f.Metadata.Name = "Hello" }, []string{"metadata.name"}},
		{"name underscore", func(f *api.Function) { f.Metadata.Name = "hello_world" }, []string{"metadata.name"}},
		{"name 64 chars", func(f *api.Function) { f.Metadata.Name = strings.Repeat("a", 64) }, []string{"metadata.name"}},
		{"name leading digit", func(f *api.Function) { f.Metadata.Name = "1hello" }, []string{"metadata.name"}},
		{"name leading hyphen", func(f *api.Function) { f.Metadata.Name = "-hello" }, []string{"metadata.name"}},
		{"name trailing hyphen", func(f *api.Function) { f.Metadata.Name = "hello-" }, []string{"metadata.name"}},
		{"name dot", func(f *api.Function) { f.Metadata.Name = "hello.world" }, []string{"metadata.name"}},

		// metadata.namespace: empty (the default) or a DNS-1123 label.
		{"namespace empty", func(f *api.Function) { f.Metadata.Namespace = "" }, nil},
		{"namespace set", func(f *api.Function) { f.Metadata.Namespace = "prod" }, nil},
		{"namespace uppercase", func(f *api.Function) { f.Metadata.Namespace = "Prod" }, []string{"metadata.namespace"}},
		{"namespace 64 chars", func(f *api.Function) { f.Metadata.Namespace = strings.Repeat("n", 64) }, []string{"metadata.namespace"}},

		// metadata.labels
		{"labels none", func(f *api.Function) { f.Metadata.Labels = nil }, nil},
		{"label empty value", func(f *api.Function) { f.Metadata.Labels = map[string]string{"a": ""} }, nil},
		{"label prefixed key", func(f *api.Function) { f.Metadata.Labels = map[string]string{"example.com/Tier_1.x": "A-b_c.9"} }, nil},
		{"label key with space", func(f *api.Function) { f.Metadata.Labels = map[string]string{"bad key": "v"} }, []string{"metadata.labels"}},
		{"label key empty", func(f *api.Function) { f.Metadata.Labels = map[string]string{"": "v"} }, []string{"metadata.labels"}},
		{"label key too long", func(f *api.Function) { f.Metadata.Labels = map[string]string{strings.Repeat("k", 254): "v"} }, []string{"metadata.labels"}},
		{"label value with space", func(f *api.Function) { f.Metadata.Labels = map[string]string{"app": "a b"} }, []string{"metadata.labels[app]"}},
		{"label value 64 chars", func(f *api.Function) { f.Metadata.Labels = map[string]string{"app": strings.Repeat("v", 64)} }, []string{"metadata.labels[app]"}},
		{"label value trailing hyphen", func(f *api.Function) { f.Metadata.Labels = map[string]string{"app": "v-"} }, []string{"metadata.labels[app]"}},
		{"labels too many", func(f *api.Function) { f.Metadata.Labels = manyLabels }, []string{"metadata.labels"}},
		{"labels reported in key order", func(f *api.Function) {
			f.Metadata.Labels = map[string]string{"c": "bad value", "a": "bad value", "b": "bad value"}
		}, []string{"metadata.labels[a]", "metadata.labels[b]", "metadata.labels[c]"}},

		// spec.image
		{"image short", func(f *api.Function) { f.Spec.Image = "x" }, nil},
		{"image with registry and tag", func(f *api.Function) { f.Spec.Image = "example.test/hello:v1" }, nil},
		{"image with port", func(f *api.Function) { f.Spec.Image = "127.0.0.1:5000/team/hello:v1" }, nil},
		{"image by digest", func(f *api.Function) { f.Spec.Image = "example.test/hello@" + digest }, nil},
		{"image by tag and digest", func(f *api.Function) { f.Spec.Image = "example.test/hello:v1@" + digest }, nil},
		{"image empty", func(f *api.Function) { f.Spec.Image = "" }, []string{"spec.image"}},
		{"image leading space", func(f *api.Function) { f.Spec.Image = " x" }, []string{"spec.image"}},
		{"image trailing newline", func(f *api.Function) { f.Spec.Image = "x\n" }, []string{"spec.image"}},
		{"image inner space", func(f *api.Function) { f.Spec.Image = "hello world" }, []string{"spec.image"}},
		{"image garbage", func(f *api.Function) { f.Spec.Image = "UPPER/Case::" }, []string{"spec.image"}},
		{"image empty tag", func(f *api.Function) { f.Spec.Image = "hello:" }, []string{"spec.image"}},
		{"image short digest", func(f *api.Function) { f.Spec.Image = "example.test/hello@sha256:abc" }, []string{"spec.image"}},

		// spec.command, spec.args
		{"command NUL", func(f *api.Function) { f.Spec.Command = []string{"/bin/sh", "a\x00b"} }, []string{"spec.command[1]"}},
		{"args NUL", func(f *api.Function) { f.Spec.Args = []string{"\x00"} }, []string{"spec.args[0]"}},

		// spec.env
		{"env none", func(f *api.Function) { f.Spec.Env = nil }, nil},
		{"env lowercase and digits", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "a1_b", Value: "x=y"}} }, nil},
		{"env name leading digit", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A", Value: "1"}, {Name: "1A"}} }, []string{"spec.env[1].name"}},
		{"env name hyphen", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A-B"}} }, []string{"spec.env[0].name"}},
		{"env name empty", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "", Value: "v"}} }, []string{"spec.env[0].name"}},
		{"env PORT reserved", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A"}, {Name: "PORT", Value: "9090"}} }, []string{"spec.env[1].name"}},
		{"env duplicate", func(f *api.Function) {
			f.Spec.Env = []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B"}, {Name: "A", Value: "2"}}
		}, []string{"spec.env[2].name"}},
		{"env names are case sensitive", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A"}, {Name: "a"}} }, nil},
		{"env value NUL", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A", Value: "\x00"}} }, []string{"spec.env[0].value"}},
		{"env too many", func(f *api.Function) { f.Spec.Env = manyEnv }, []string{"spec.env"}},
		{"env too large", func(f *api.Function) {
			f.Spec.Env = []api.EnvVar{{Name: "BIG", Value: strings.Repeat("x", api.MaxEnvBytes)}}
		}, []string{"spec.env"}},

		// spec.port
		{"port 0 is the default", func(f *api.Function) { f.Spec.Port = 0 }, nil},
		{"port 1", func(f *api.Function) { f.Spec.Port = 1 }, nil},
		{"port 65535", func(f *api.Function) { f.Spec.Port = 65535 }, nil},
		{"port 65536", func(f *api.Function) { f.Spec.Port = 65536 }, []string{"spec.port"}},
		{"port -1", func(f *api.Function) { f.Spec.Port = -1 }, []string{"spec.port"}},

		// spec.resources.cpu
		{"cpu empty is the default", func(f *api.Function) { f.Spec.Resources.CPU = "" }, nil},
		{"cpu 250m", func(f *api.Function) { f.Spec.Resources.CPU = "250m" }, nil},
		{"cpu 1", func(f *api.Function) { f.Spec.Resources.CPU = "1" }, nil},
		{"cpu 0.5", func(f *api.Function) { f.Spec.Resources.CPU = "0.5" }, nil},
		{"cpu 1.001", func(f *api.Function) { f.Spec.Resources.CPU = "1.001" }, nil},
		{"cpu 1m", func(f *api.Function) { f.Spec.Resources.CPU = "1m" }, nil},
		{"cpu 256", func(f *api.Function) { f.Spec.Resources.CPU = "256" }, nil},
		{"cpu finer than 1m", func(f *api.Function) { f.Spec.Resources.CPU = "0.0001" }, []string{"spec.resources.cpu"}},
		{"cpu fractional millicores", func(f *api.Function) { f.Spec.Resources.CPU = "1.5m" }, []string{"spec.resources.cpu"}},
		{"cpu abc", func(f *api.Function) { f.Spec.Resources.CPU = "abc" }, []string{"spec.resources.cpu"}},
		{"cpu negative", func(f *api.Function) { f.Spec.Resources.CPU = "-1" }, []string{"spec.resources.cpu"}},
		{"cpu exponent", func(f *api.Function) { f.Spec.Resources.CPU = "1e3" }, []string{"spec.resources.cpu"}},
		{"cpu zero", func(f *api.Function) { f.Spec.Resources.CPU = "0" }, []string{"spec.resources.cpu"}},
		{"cpu 257", func(f *api.Function) { f.Spec.Resources.CPU = "257" }, []string{"spec.resources.cpu"}},
		{"cpu overflows", func(f *api.Function) { f.Spec.Resources.CPU = "99999999999999999999" }, []string{"spec.resources.cpu"}},

		// spec.resources.memory
		{"memory empty is the default", func(f *api.Function) { f.Spec.Resources.Memory = "" }, nil},
		{"memory 128Mi", func(f *api.Function) { f.Spec.Resources.Memory = "128Mi" }, nil},
		{"memory 1Gi", func(f *api.Function) { f.Spec.Resources.Memory = "1Gi" }, nil},
		{"memory 500M", func(f *api.Function) { f.Spec.Resources.Memory = "500M" }, nil},
		{"memory 4Mi", func(f *api.Function) { f.Spec.Resources.Memory = "4Mi" }, nil},
		{"memory 1Ti", func(f *api.Function) { f.Spec.Resources.Memory = "1Ti" }, nil},
		{"memory bytes", func(f *api.Function) { f.Spec.Resources.Memory = "134217728" }, nil},
		{"memory 3Mi too small", func(f *api.Function) { f.Spec.Resources.Memory = "3Mi" }, []string{"spec.resources.memory"}},
		{"memory 2Ti too big", func(f *api.Function) { f.Spec.Resources.Memory = "2Ti" }, []string{"spec.resources.memory"}},
		{"memory unknown suffix", func(f *api.Function) { f.Spec.Resources.Memory = "12Qi" }, []string{"spec.resources.memory"}},
		{"memory negative", func(f *api.Function) { f.Spec.Resources.Memory = "-128Mi" }, []string{"spec.resources.memory"}},
		{"memory abc", func(f *api.Function) { f.Spec.Resources.Memory = "abc" }, []string{"spec.resources.memory"}},

		// spec.concurrency
		{"concurrency 0 is no limit", func(f *api.Function) { f.Spec.Concurrency = 0 }, nil},
		{"concurrency max", func(f *api.Function) { f.Spec.Concurrency = api.MaxConcurrency }, nil},
		{"concurrency negative", func(f *api.Function) { f.Spec.Concurrency = -1 }, []string{"spec.concurrency"}},
		{"concurrency too high", func(f *api.Function) { f.Spec.Concurrency = api.MaxConcurrency + 1 }, []string{"spec.concurrency"}},

		// spec.queueDepth
		{"queue depth 0 is the gateway's", func(f *api.Function) { f.Spec.QueueDepth = 0 }, nil},
		{"queue depth max", func(f *api.Function) { f.Spec.QueueDepth = api.MaxQueueDepth }, nil},
		{"queue depth negative", func(f *api.Function) { f.Spec.QueueDepth = -1 }, []string{"spec.queueDepth"}},
		{"queue depth too high", func(f *api.Function) { f.Spec.QueueDepth = api.MaxQueueDepth + 1 }, []string{"spec.queueDepth"}},

		// spec.timeout
		{"timeout zero is the default", func(f *api.Function) { f.Spec.Timeout = api.Duration{} }, nil},
		{"timeout 1s", func(f *api.Function) { f.Spec.Timeout = dur("1s") }, nil},
		{"timeout 1h", func(f *api.Function) { f.Spec.Timeout = dur("1h") }, nil},
		{"timeout 999ms", func(f *api.Function) { f.Spec.Timeout = dur("999ms") }, []string{"spec.timeout"}},
		{"timeout 2h", func(f *api.Function) { f.Spec.Timeout = dur("2h") }, []string{"spec.timeout"}},
		{"timeout negative", func(f *api.Function) { f.Spec.Timeout = dur("-5s") }, []string{"spec.timeout"}},

		// spec.readiness
		{"readiness none", func(f *api.Function) { f.Spec.Readiness = nil }, nil},
		{"readiness TCP only", func(f *api.Function) { f.Spec.Readiness = &api.Probe{} }, nil},
		{"readiness path with query", func(f *api.Function) { f.Spec.Readiness.Path = "/ready?full=1" }, nil},
		{"readiness path relative", func(f *api.Function) { f.Spec.Readiness.Path = "healthz" }, []string{"spec.readiness.path"}},
		{"readiness path with space", func(f *api.Function) { f.Spec.Readiness.Path = "/health z" }, []string{"spec.readiness.path"}},
		{"readiness path with tab", func(f *api.Function) { f.Spec.Readiness.Path = "/health\t" }, []string{"spec.readiness.path"}},
		{"readiness period 5m", func(f *api.Function) { f.Spec.Readiness.Period = dur("5m") }, nil},
		{"readiness period zero is the default", func(f *api.Function) { f.Spec.Readiness.Period = api.Duration{} }, nil},
		{"readiness period 500ms", func(f *api.Function) { f.Spec.Readiness.Period = dur("500ms") }, []string{"spec.readiness.period"}},
		{"readiness period 6m", func(f *api.Function) { f.Spec.Readiness.Period = dur("6m") }, []string{"spec.readiness.period"}},
		{"readiness period negative", func(f *api.Function) { f.Spec.Readiness.Period = dur("-10s") }, []string{"spec.readiness.period"}},

		// spec.scaling
		{"scaling empty", func(f *api.Function) { f.Spec.Scaling = api.ScalingPolicy{} }, nil},
		{"scaling min equals max", func(f *api.Function) { f.Spec.Scaling.MinScale, f.Spec.Scaling.MaxScale = 3, 3 }, nil},
		{"scaling min above unlimited max", func(f *api.Function) { f.Spec.Scaling.MinScale, f.Spec.Scaling.MaxScale = 5, 0 }, nil},
		{"scaling min above max", func(f *api.Function) {
			f.Spec.Scaling.MinScale, f.Spec.Scaling.MaxScale = 5, 2
		}, []string{"spec.scaling.minScale"}},
		{"scaling min negative", func(f *api.Function) { f.Spec.Scaling.MinScale = -1 }, []string{"spec.scaling.minScale"}},
		{"scaling max negative", func(f *api.Function) { f.Spec.Scaling.MaxScale = -1 }, []string{"spec.scaling.maxScale"}},
		{"scaling metric rps", func(f *api.Function) { f.Spec.Scaling.Metric = api.MetricRPS }, nil},
		{"scaling metric empty", func(f *api.Function) { f.Spec.Scaling.Metric = "" }, nil},
		{"scaling metric unknown", func(f *api.Function) { f.Spec.Scaling.Metric = "cpu" }, []string{"spec.scaling.metric"}},
		{"scaling metric wrong case", func(f *api.Function) { f.Spec.Scaling.Metric = "RPS" }, []string{"spec.scaling.metric"}},
		{"scaling target 0 is the default", func(f *api.Function) { f.Spec.Scaling.Target = 0 }, nil},
		{"scaling target fractional", func(f *api.Function) { f.Spec.Scaling.Target = 0.5 }, nil},
		{"scaling target max", func(f *api.Function) { f.Spec.Scaling.Target = 1e6 }, nil},
		{"scaling target negative", func(f *api.Function) { f.Spec.Scaling.Target = -1 }, []string{"spec.scaling.target"}},
		{"scaling target too high", func(f *api.Function) { f.Spec.Scaling.Target = 1e6 + 1 }, []string{"spec.scaling.target"}},
		{"grace zero is the default", func(f *api.Function) { f.Spec.Scaling.ScaleToZeroGrace = api.Duration{} }, nil},
		{"grace 1h", func(f *api.Function) { f.Spec.Scaling.ScaleToZeroGrace = dur("1h") }, nil},
		{"grace negative", func(f *api.Function) { f.Spec.Scaling.ScaleToZeroGrace = dur("-1s") }, []string{"spec.scaling.scaleToZeroGrace"}},
		{"grace 2h", func(f *api.Function) { f.Spec.Scaling.ScaleToZeroGrace = dur("2h") }, []string{"spec.scaling.scaleToZeroGrace"}},
		{"window 6s", func(f *api.Function) { f.Spec.Scaling.StableWindow = dur("6s") }, nil},
		{"window 5s", func(f *api.Function) { f.Spec.Scaling.StableWindow = dur("5s") }, []string{"spec.scaling.stableWindow"}},
		{"window 2h", func(f *api.Function) { f.Spec.Scaling.StableWindow = dur("2h") }, []string{"spec.scaling.stableWindow"}},

		// Every problem is reported at once, in field order.
		{"three bad fields", func(f *api.Function) {
			f.Spec.Port = -1
			f.Spec.Resources.CPU = "abc"
			f.Spec.Timeout = dur("2h")
		}, []string{"spec.port", "spec.resources.cpu", "spec.timeout"}},
		// spec.nodeSelector: label pairs.
		{"node selector", func(f *api.Function) { f.Spec.NodeSelector = map[string]string{"disk": "ssd", "example.com/zone": "a"} }, nil},
		{"node selector bad value", func(f *api.Function) { f.Spec.NodeSelector = map[string]string{"disk": "s s d"} }, []string{"spec.nodeSelector[disk]"}},
		{"node selector bad key", func(f *api.Function) { f.Spec.NodeSelector = map[string]string{"bad key": "v"} }, []string{"spec.nodeSelector"}},
		// spec.canary, spec.keepRevisions: how revisions roll out and are kept.
		{"canary", func(f *api.Function) {
			f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{10, 50, 100}, StepDuration: dur("30s")}
		}, nil},
		{"canary one step", func(f *api.Function) { f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{100}} }, nil},
		{"canary no steps", func(f *api.Function) { f.Spec.Canary = &api.CanaryStrategy{} }, []string{"spec.canary.steps"}},
		{"canary not ending at 100", func(f *api.Function) { f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{10, 50}} }, []string{"spec.canary.steps"}},
		{"canary steps going down", func(f *api.Function) {
			f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{50, 10, 100}}
		}, []string{"spec.canary.steps[1]"}},
		{"canary step 0", func(f *api.Function) { f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{0, 100}} }, []string{"spec.canary.steps[0]"}},
		{"canary thresholds", func(f *api.Function) {
			f.Spec.Canary = &api.CanaryStrategy{Steps: []int32{100}, StepDuration: dur("10ms"), MaxErrorRateIncrease: 2,
				MaxLatencyRatio: 0.5, MinLatencyIncrease: dur("2h"), MinRequests: -1}
		}, []string{"spec.canary.stepDuration", "spec.canary.maxErrorRateIncrease", "spec.canary.maxLatencyRatio",
			"spec.canary.minLatencyIncrease", "spec.canary.minRequests"}},
		{"keep revisions", func(f *api.Function) { f.Spec.KeepRevisions = 3 }, nil},
		{"keep revisions negative", func(f *api.Function) { f.Spec.KeepRevisions = -1 }, []string{"spec.keepRevisions"}},
		{"everything wrong", func(f *api.Function) {
			*f = api.Function{
				Metadata: api.ObjectMeta{Name: "Bad_Name", Namespace: "Bad_NS", Labels: map[string]string{"k": "a b"}},
				Spec: api.FunctionSpec{
					Env:         []api.EnvVar{{Name: "PORT"}},
					Port:        70000,
					Resources:   api.Resources{CPU: "1e3", Memory: "3Mi"},
					Concurrency: -1,
					Timeout:     dur("2h"),
					Readiness:   &api.Probe{Path: "x", Period: dur("1ms")},
					Scaling:     api.ScalingPolicy{MinScale: 3, MaxScale: 2, Metric: "cpu", Target: -1, ScaleToZeroGrace: dur("-1s")},
				},
			}
		}, []string{
			"metadata.name", "metadata.namespace", "metadata.labels[k]",
			"spec.image", "spec.env[0].name", "spec.port", "spec.resources.cpu", "spec.resources.memory",
			"spec.concurrency", "spec.timeout", "spec.readiness.path", "spec.readiness.period",
			"spec.scaling.minScale", "spec.scaling.metric", "spec.scaling.target", "spec.scaling.scaleToZeroGrace",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := validFunction()
			tt.change(f)
			if diff := cmp.Diff(tt.want, fields(t, api.ValidateFunction(f))); diff != "" {
				t.Errorf("ValidateFunction field paths (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateFunctionMessages pins the sentences users read, through the
// CLI and in API answers.
func TestValidateFunctionMessages(t *testing.T) {
	tests := []struct {
		name   string
		change func(*api.Function)
		want   api.FieldErrors
	}{
		{"name empty", func(f *api.Function) { f.Metadata.Name = "" },
			api.FieldErrors{{Field: "metadata.name", Message: "is required"}}},
		{"name invalid", func(f *api.Function) { f.Metadata.Name = "Bad_Name" },
			api.FieldErrors{{Field: "metadata.name", Message: `"Bad_Name" ` + api.NameRule}}},
		{"image empty", func(f *api.Function) { f.Spec.Image = "" },
			api.FieldErrors{{Field: "spec.image", Message: `is required: name an image like "registry.example/hello:v1"`}}},
		{"port", func(f *api.Function) { f.Spec.Port = 70000 },
			api.FieldErrors{{Field: "spec.port", Message: "must be between 1 and 65535"}}},
		{"cpu finer than 1m", func(f *api.Function) { f.Spec.Resources.CPU = "0.0001" },
			api.FieldErrors{{Field: "spec.resources.cpu", Message: `cpu quantity "0.0001": finer than one millicore`}}},
		{"cpu out of range", func(f *api.Function) { f.Spec.Resources.CPU = "0m" },
			api.FieldErrors{{Field: "spec.resources.cpu", Message: `must be between 1m and 256 cores, got "0m"`}}},
		{"memory out of range", func(f *api.Function) { f.Spec.Resources.Memory = "2Ti" },
			api.FieldErrors{{Field: "spec.resources.memory", Message: `must be between 4Mi and 1Ti, got "2Ti"`}}},
		{"timeout out of range", func(f *api.Function) { f.Spec.Timeout = dur("2h") },
			api.FieldErrors{{Field: "spec.timeout", Message: "must be between 1s and 1h0m0s, got 2h"}}},
		{"timeout below range", func(f *api.Function) { f.Spec.Timeout = dur("500ms") },
			api.FieldErrors{{Field: "spec.timeout", Message: "must be between 1s and 1h0m0s, got 500ms"}}},
		{"env PORT", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "PORT"}} },
			api.FieldErrors{{Field: "spec.env[0].name", Message: "PORT is set by Surge from spec.port"}}},
		{"env duplicate", func(f *api.Function) { f.Spec.Env = []api.EnvVar{{Name: "A"}, {Name: "A"}} },
			api.FieldErrors{{Field: "spec.env[1].name", Message: `"A" is set twice`}}},
		{"min above max", func(f *api.Function) { f.Spec.Scaling.MinScale, f.Spec.Scaling.MaxScale = 5, 2 },
			api.FieldErrors{{Field: "spec.scaling.minScale", Message: "must not exceed scaling.maxScale (5 > 2)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := validFunction()
			tt.change(f)
			var got api.FieldErrors
			if err := api.ValidateFunction(f); !errors.As(err, &got) {
				t.Fatalf("ValidateFunction = %v, want FieldErrors", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ValidateFunction (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateNode(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	many := make([]string, api.MaxNodeImages+1)
	for i := range many {
		many[i] = digest
	}
	for _, tt := range []struct {
		name   string
		change func(*api.Node)
		want   []string
	}{
		{"valid", func(*api.Node) {}, nil},
		{"labels and images", func(n *api.Node) {
			n.Metadata.Labels = map[string]string{"disk": "ssd"}
			n.Status.Images = []string{digest}
		}, nil},
		{"bad name", func(n *api.Node) { n.Metadata.Name = "Node_1" }, []string{"metadata.name"}},
		{"a namespace", func(n *api.Node) { n.Metadata.Namespace = "default" }, []string{"metadata.namespace"}},
		{"bad label", func(n *api.Node) { n.Metadata.Labels = map[string]string{"disk": "s s d"} }, []string{"metadata.labels[disk]"}},
		{"not a digest", func(n *api.Node) { n.Status.Images = []string{"hello:v1"} }, []string{"status.images[0]"}},
		{"too many images", func(n *api.Node) { n.Status.Images = many }, []string{"status.images"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := &api.Node{Metadata: api.ObjectMeta{Name: "node-1"}}
			tt.change(n)
			if diff := cmp.Diff(tt.want, fields(t, api.ValidateNode(n))); diff != "" {
				t.Errorf("ValidateNode field paths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, s := range []string{"a", "hello", "hello-world", "a1", strings.Repeat("a", 63)} {
		if err := api.ValidateName(s); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"", "A", "hello_world", "1a", "-a", "a-", "a.b", "a b", "héllo", strings.Repeat("a", 64)} {
		if err := api.ValidateName(s); err == nil || err.Error() != api.NameRule {
			t.Errorf("ValidateName(%q) = %v, want %q", s, err, api.NameRule)
		}
	}
}

func TestValidateTraffic(t *testing.T) {
	traffic := func(name string, targets ...api.TrafficTarget) *api.Traffic {
		return &api.Traffic{Metadata: api.ObjectMeta{Name: name, Namespace: "default"}, Spec: api.TrafficSpec{Targets: targets}}
	}
	tg := func(rev string, pct int32) api.TrafficTarget { return api.TrafficTarget{Revision: rev, Percent: pct} }
	tagged := func(rev string, pct int32, tag string) api.TrafficTarget {
		return api.TrafficTarget{Revision: rev, Percent: pct, Tag: tag}
	}
	tests := []struct {
		name string
		t    *api.Traffic
		want []string
	}{
		{"one target", traffic("hello", tg("hello-00001", 100)), nil},
		{"split", traffic("hello", tg("hello-00002", 80), tg("hello-00001", 20)), nil},
		{"zero share kept", traffic("hello", tg("hello-00002", 100), tg("hello-00001", 0)), nil},
		{"hyphenated function", traffic("hello-world", tg("hello-world-00012", 100)), nil},
		{"no targets", traffic("hello"), []string{"spec.targets"}},
		{"sum below 100", traffic("hello", tg("hello-00001", 50), tg("hello-00002", 40)), []string{"spec.targets"}},
		{"sum above 100", traffic("hello", tg("hello-00001", 100), tg("hello-00002", 1)), []string{"spec.targets"}},
		{"duplicate", traffic("hello", tg("hello-00001", 50), tg("hello-00001", 50)), []string{"spec.targets[1].revision"}},
		{"foreign revision", traffic("hello", tg("world-00001", 100)), []string{"spec.targets[0].revision"}},
		{"revision of a prefix function", traffic("hello-world", tg("hello-00001", 100)), []string{"spec.targets[0].revision"}},
		{"not a revision name", traffic("hello", tg("hello", 100)), []string{"spec.targets[0].revision"}},
		{"revision zero", traffic("hello", tg("hello-00000", 100)), []string{"spec.targets[0].revision"}},
		{"short number", traffic("hello", tg("hello-1", 100)), []string{"spec.targets[0].revision"}},
		{"percent negative", traffic("hello", tg("hello-00001", -10), tg("hello-00002", 110)),
			[]string{"spec.targets[0].percent", "spec.targets[1].percent"}},
		{"bad name", traffic("Bad_Name", tg("Bad_Name-00001", 100)), []string{"metadata.name"}},
		{"bad namespace", &api.Traffic{
			Metadata: api.ObjectMeta{Name: "hello", Namespace: "Bad"},
			Spec:     api.TrafficSpec{Targets: []api.TrafficTarget{tg("hello-00001", 100)}},
		}, []string{"metadata.namespace"}},
		{"tag at 0%", traffic("hello", tg("hello-00002", 100), tagged("hello-00001", 0, "old")), nil},
		{"tag with a share", traffic("hello", tagged("hello-00002", 100, "current")), nil},
		{"tag twice", traffic("hello", tagged("hello-00002", 100, "a"), tagged("hello-00001", 0, "a")), []string{"spec.targets[1].tag"}},
		{"bad tag", traffic("hello", tagged("hello-00002", 100, "Old_1")), []string{"spec.targets[0].tag"}},
		{"tag host too long", traffic("hello", tagged("hello-00002", 100, strings.Repeat("t", 58))), []string{"spec.targets[0].tag"}},
		{"everything at once", traffic("hello", tg("world-00001", 50), tg("x", 30), tg("hello-00001", 101)),
			[]string{"spec.targets[0].revision", "spec.targets[1].revision", "spec.targets[2].percent", "spec.targets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fields(t, api.ValidateTraffic(tt.t))); diff != "" {
				t.Errorf("ValidateTraffic field paths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateScale(t *testing.T) {
	scale := func(name string, replicas int32) *api.Scale {
		return &api.Scale{Metadata: api.ObjectMeta{Name: name, Namespace: "default"}, Spec: api.ScaleSpec{Replicas: replicas}}
	}
	tests := []struct {
		name string
		s    *api.Scale
		want []string
	}{
		{"zero replicas", scale("hello-00001", 0), nil},
		{"some replicas", scale("hello-00001", 3), nil},
		{"negative", scale("hello-00001", -1), []string{"spec.replicas"}},
		{"not a revision name", scale("hello", 1), []string{"metadata.name"}},
		{"empty name", scale("", 1), []string{"metadata.name"}},
		{"both", scale("hello", -1), []string{"metadata.name", "spec.replicas"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fields(t, api.ValidateScale(tt.s))); diff != "" {
				t.Errorf("ValidateScale field paths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRevisionName(t *testing.T) {
	tests := []struct {
		function string
		n        int64
		want     string
	}{
		{"hello", 1, "hello-00001"},
		{"hello", 42, "hello-00042"},
		{"hello-world", 99999, "hello-world-99999"},
		{"a", 100000, "a-100000"},
		{"x-00001", 2, "x-00001-00002"},
	}
	for _, tt := range tests {
		got := api.RevisionName(tt.function, tt.n)
		if got != tt.want {
			t.Errorf("RevisionName(%q, %d) = %q, want %q", tt.function, tt.n, got, tt.want)
		}
		fn, n, ok := api.ParseRevisionName(got)
		if !ok || fn != tt.function || n != tt.n {
			t.Errorf("ParseRevisionName(%q) = %q, %d, %v; want %q, %d, true", got, fn, n, ok, tt.function, tt.n)
		}
	}
}

func TestParseRevisionNameRejects(t *testing.T) {
	for _, s := range []string{
		"", "hello", "hello-", "-00001", "hello-0001", "hello-00000", "hello-0000x", "hello00001",
		"hello-99999999999999999999", // overflows int64
	} {
		if fn, n, ok := api.ParseRevisionName(s); ok {
			t.Errorf("ParseRevisionName(%q) = %q, %d, true; want not ok", s, fn, n)
		}
	}
}

func TestSetDefaults(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		var s api.FunctionSpec
		api.SetDefaults(&s)
		want := api.FunctionSpec{
			Port:      api.DefaultPort,
			Resources: api.Resources{CPU: api.DefaultCPU, Memory: api.DefaultMemory},
			Timeout:   api.Duration{Duration: api.DefaultTimeout},
			Scaling:   api.ScalingPolicy{Metric: api.MetricConcurrency},
		}
		if diff := cmp.Diff(want, s); diff != "" {
			t.Errorf("SetDefaults (-want +got):\n%s", diff)
		}
	})
	t.Run("keeps what is set", func(t *testing.T) {
		s := validFunction().Spec
		s.Scaling.Metric = api.MetricRPS
		want := validFunction().Spec
		want.Scaling.Metric = api.MetricRPS
		api.SetDefaults(&s)
		if diff := cmp.Diff(want, s); diff != "" {
			t.Errorf("SetDefaults (-want +got):\n%s", diff)
		}
	})
	t.Run("canary thresholds", func(t *testing.T) {
		s := api.FunctionSpec{Canary: &api.CanaryStrategy{Steps: []int32{10, 100}, MinRequests: 5}}
		given := s.Canary
		api.SetDefaults(&s)
		want := api.CanaryStrategy{Steps: []int32{10, 100}, StepDuration: api.Duration{Duration: api.DefaultStepDuration},
			MaxErrorRateIncrease: api.DefaultMaxErrorRateIncrease, MaxLatencyRatio: api.DefaultMaxLatencyRatio,
			MinLatencyIncrease: api.Duration{Duration: api.DefaultMinLatencyIncrease}, MinRequests: 5}
		if diff := cmp.Diff(want, *s.Canary); diff != "" {
			t.Errorf("SetDefaults canary (-want +got):\n%s", diff)
		}
		if given.StepDuration.Duration != 0 {
			t.Errorf("SetDefaults changed the caller's strategy in place")
		}
	})
	t.Run("idempotent and valid", func(t *testing.T) {
		f := &api.Function{Metadata: api.ObjectMeta{Name: "hello"}, Spec: api.FunctionSpec{Image: "x"}}
		api.SetDefaults(&f.Spec)
		once := f.Spec
		api.SetDefaults(&f.Spec)
		if diff := cmp.Diff(once, f.Spec); diff != "" {
			t.Errorf("second SetDefaults changed the spec (-first +second):\n%s", diff)
		}
		if err := api.ValidateFunction(f); err != nil {
			t.Errorf("defaulted spec is invalid: %v", err)
		}
	})
}
