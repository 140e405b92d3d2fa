package cli

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/surgeplatform/surge/api"
)

// helloV1 is the function the deploy tests start from, as stored.
func helloV1() api.Function {
	return api.Function{
		Metadata: api.ObjectMeta{Name: "hello", Labels: map[string]string{"team": "web"}},
		Spec: api.FunctionSpec{
			Image:       "example.test/hello:v1",
			Env:         []api.EnvVar{{Name: "GREETING", Value: "hi"}, {Name: "LEVEL", Value: "info"}},
			Port:        9090,
			Resources:   api.Resources{CPU: "250m", Memory: "256Mi"},
			Concurrency: 10,
			Timeout:     api.Seconds(30),
			Readiness:   &api.Probe{Path: "/ready"},
			Scaling:     api.ScalingPolicy{MinScale: 1, MaxScale: 5, Metric: api.MetricRPS, Target: 50},
		},
	}
}

// deployOpts builds DeployOptions as newDeployCmd would from flags: Set
// names the flags given.
func deployOpts(f *fakeAPI, s Streams, name string, set func(o *DeployOptions)) *DeployOptions {
	o := &DeployOptions{Streams: s, NewClient: f.newClient, Name: name, Set: map[string]bool{}}
	if set != nil {
		set(o)
	}
	return o
}

func TestDeploy(t *testing.T) {
	tests := []struct {
		name     string
		existing bool // whether helloV1 is deployed first
		set      func(o *DeployOptions)
		// change turns the stored helloV1 spec (or an empty spec for a new
		// function) into the spec the deploy should PUT.
		change  func(s *api.FunctionSpec)
		wantOut string
	}{
		{
			name: "new function gets defaults",
			set: func(o *DeployOptions) {
				o.Image, o.Set["image"] = "example.test/hello:v1", true
			},
			change: func(s *api.FunctionSpec) {
				*s = api.FunctionSpec{
					Image: "example.test/hello:v1", Port: 8080,
					Resources: api.Resources{CPU: "100m", Memory: "128Mi"},
					Timeout:   api.Seconds(300), Scaling: api.ScalingPolicy{Metric: api.MetricConcurrency},
				}
			},
			wantOut: "function \"hello\" created: revision hello-00001 takes all traffic\n",
		},
		{
			name: "new function with every flag",
			set: func(o *DeployOptions) {
				o.Image, o.Env, o.Port, o.Concurrency = "x", []string{"A=1", "B=x=y"}, 3000, 4
				o.MinScale, o.MaxScale, o.CPU, o.Memory, o.Timeout = 2, 8, "1.5", "1Gi", api.Seconds(60)
				for _, f := range []string{"image", "env", "port", "concurrency", "min-scale", "max-scale", "cpu", "memory", "timeout"} {
					o.Set[f] = true
				}
			},
			change: func(s *api.FunctionSpec) {
				*s = api.FunctionSpec{
					Image: "x", Env: []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "x=y"}}, Port: 3000,
					Resources: api.Resources{CPU: "1.5", Memory: "1Gi"}, Concurrency: 4, Timeout: api.Seconds(60),
					Scaling: api.ScalingPolicy{MinScale: 2, MaxScale: 8, Metric: api.MetricConcurrency},
				}
			},
			wantOut: "function \"hello\" created: revision hello-00001 takes all traffic\n",
		},
		{
			name:     "env added, everything else kept",
			existing: true,
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"A=1"}, true },
			change: func(s *api.FunctionSpec) {
				s.Env = append(s.Env, api.EnvVar{Name: "A", Value: "1"})
			},
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "env changed in place",
			existing: true,
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"GREETING=hello"}, true },
			change: func(s *api.FunctionSpec) {
				s.Env = []api.EnvVar{{Name: "GREETING", Value: "hello"}, {Name: "LEVEL", Value: "info"}}
			},
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "env removed",
			existing: true,
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"GREETING-"}, true },
			change: func(s *api.FunctionSpec) {
				s.Env = []api.EnvVar{{Name: "LEVEL", Value: "info"}}
			},
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "env edits apply in order",
			existing: true,
			set: func(o *DeployOptions) {
				o.Env, o.Set["env"] = []string{"LEVEL-", "LEVEL=debug", "X=1", "X-", "GREETING=a=b"}, true
			},
			change: func(s *api.FunctionSpec) {
				s.Env = []api.EnvVar{{Name: "GREETING", Value: "a=b"}, {Name: "LEVEL", Value: "debug"}}
			},
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "removing a missing variable changes nothing",
			existing: true,
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"NOPE-"}, true },
			change:   func(s *api.FunctionSpec) {},
			wantOut:  "function \"hello\" unchanged: revision hello-00001\n",
		},
		{
			name:     "image only",
			existing: true,
			set:      func(o *DeployOptions) { o.Image, o.Set["image"] = "example.test/hello:v2", true },
			change:   func(s *api.FunctionSpec) { s.Image = "example.test/hello:v2" },
			wantOut:  "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "same image is unchanged",
			existing: true,
			set:      func(o *DeployOptions) { o.Image, o.Set["image"] = "example.test/hello:v1", true },
			change:   func(s *api.FunctionSpec) {},
			wantOut:  "function \"hello\" unchanged: revision hello-00001\n",
		},
		{
			name:     "https redirect makes no revision",
			existing: true,
			set:      func(o *DeployOptions) { o.HTTPSRedirect, o.Set["https-redirect"] = true, true },
			change:   func(s *api.FunctionSpec) { s.HTTPSRedirect = true },
			wantOut:  "function \"hello\" updated, with no new revision: the gateways redirect its plain HTTP requests to HTTPS\n",
		},
		{
			name:     "no flags is unchanged",
			existing: true,
			change:   func(s *api.FunctionSpec) {},
			wantOut:  "function \"hello\" unchanged: revision hello-00001\n",
		},
		{
			name:     "flags at their zero value are applied",
			existing: true,
			set: func(o *DeployOptions) {
				o.Set["concurrency"], o.Set["min-scale"], o.Set["max-scale"], o.Set["port"] = true, true, true, true
			},
			change: func(s *api.FunctionSpec) {
				s.Concurrency, s.Scaling.MinScale, s.Scaling.MaxScale = 0, 0, 0
				s.Port = api.DefaultPort // 0 means the default
			},
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
		{
			name:     "flags not given keep their values",
			existing: true,
			set: func(o *DeployOptions) {
				// Values without Set are what cobra leaves when a flag is
				// absent; they must not reach the spec.
				o.Port, o.CPU, o.Timeout = 1, "9", api.Seconds(1)
				o.Memory, o.Set["memory"] = "512Mi", true
			},
			change:  func(s *api.FunctionSpec) { s.Resources.Memory = "512Mi" },
			wantOut: "function \"hello\" updated: revision hello-00002 takes all traffic\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			want := api.Function{Metadata: api.ObjectMeta{Name: "hello", Namespace: "default"}}
			if tt.existing {
				stored := f.deploy(t, helloV1())
				want.Spec = stored.Spec
				want.Metadata.Labels = stored.Metadata.Labels
				want.Metadata.ResourceVersion = stored.Metadata.ResourceVersion
			}
			tt.change(&want.Spec)

			s, out, errb := testStreams()
			if err := runDeploy(t.Context(), deployOpts(f, s, "hello", tt.set)); err != nil {
				t.Fatalf("runDeploy: %v", err)
			}
			puts := f.puts(t)
			if len(puts) != 1 {
				t.Fatalf("deploy made %d PUTs, want 1", len(puts))
			}
			if diff := cmp.Diff(want, puts[0]); diff != "" {
				t.Errorf("PUT body (-want +got):\n%s", diff)
			}
			if got := out.String(); got != tt.wantOut {
				t.Errorf("stdout = %q, want %q", got, tt.wantOut)
			}
			if errb.Len() > 0 {
				t.Errorf("stderr = %q, want nothing", errb)
			}
		})
	}
}

func TestDeployErrors(t *testing.T) {
	tests := []struct {
		name     string
		existing bool
		fail     *api.Error // the fake's answer to the PUT
		deploy   string
		set      func(o *DeployOptions)
		want     string
		usage    bool // whether the error is a usage error (exit 2)
		wantPut  bool // whether the deploy reached the PUT
	}{
		{
			name:   "new function without --image",
			deploy: "hello",
			set:    func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"A=1"}, true },
			want:   `function "hello" does not exist yet: give its image with --image REF, or a folder to build: surge deploy hello DIR`,
			usage:  true,
		},
		{
			name:   "bad name",
			deploy: "Bad_Name",
			set:    func(o *DeployOptions) { o.Image, o.Set["image"] = "x", true },
			want:   `function "Bad_Name": name ` + api.NameRule,
		},
		{
			name:     "malformed --env",
			existing: true,
			deploy:   "hello",
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"NOEQUALS"}, true },
			want:     `--env "NOEQUALS": want NAME=VALUE, or NAME- to remove it`,
			usage:    true,
		},
		{
			name:     "--env with no name",
			existing: true,
			deploy:   "hello",
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"=v"}, true },
			want:     `--env "=v": want NAME=VALUE, or NAME- to remove it`,
			usage:    true,
		},
		{
			name:     "--env with only a hyphen",
			existing: true,
			deploy:   "hello",
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"-"}, true },
			want:     `--env "-": want NAME=VALUE, or NAME- to remove it`,
			usage:    true,
		},
		{
			name:     "--env PORT",
			existing: true,
			deploy:   "hello",
			set:      func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"PORT=1"}, true },
			want:     `function "hello": --env PORT is set by Surge from spec.port`,
		},
		{
			name:   "bad --port",
			deploy: "hello",
			set: func(o *DeployOptions) {
				o.Image, o.Port, o.Set["image"], o.Set["port"] = "x", 70000, true, true
			},
			want: `function "hello": --port must be between 1 and 65535`,
		},
		{
			name:     "every bad flag at once",
			existing: true,
			deploy:   "hello",
			set: func(o *DeployOptions) {
				o.Port, o.CPU, o.Memory, o.Timeout, o.MinScale = -1, "abc", "2Ti", api.Seconds(7200), 9
				for _, f := range []string{"port", "cpu", "memory", "timeout", "min-scale"} {
					o.Set[f] = true
				}
			},
			want: `function "hello": --port must be between 1 and 65535; ` +
				`--cpu cpu quantity "abc": want cores like "0.5" or millicores like "250m"; ` +
				`--memory must be between 4Mi and 1Ti, got "2Ti"; ` +
				`--timeout must be between 1s and 1h0m0s, got 2h; ` +
				`--min-scale must not exceed scaling.maxScale (9 > 5)`,
		},
		{
			name:     "someone deployed in between",
			existing: true,
			fail:     api.NewError(http.StatusConflict, api.ReasonConflict, `function "hello" was changed since you read it: read it again and retry`),
			deploy:   "hello",
			set:      func(o *DeployOptions) { o.Image, o.Set["image"] = "x", true },
			want:     `function "hello" changed while deploying: run the deploy again`,
			wantPut:  true,
		},
		{
			name:    "server rejects a field",
			fail:    api.Invalid(api.KindFunction, "hello", api.FieldErrors{{Field: "spec.image", Message: `"x" is not in the registry`}}),
			deploy:  "hello",
			set:     func(o *DeployOptions) { o.Image, o.Set["image"] = "x", true },
			want:    `function "hello": --image "x" is not in the registry`,
			wantPut: true,
		},
		{
			name:    "server forbids",
			fail:    api.NewError(http.StatusForbidden, api.ReasonForbidden, "token t1 (role reader) may not write functions"),
			deploy:  "hello",
			set:     func(o *DeployOptions) { o.Image, o.Set["image"] = "x", true },
			want:    `function "hello": token t1 (role reader) may not write functions`,
			wantPut: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			if tt.existing {
				f.deploy(t, helloV1())
			}
			if tt.fail != nil {
				f.edit(func() { f.fail["PUT /v1/namespaces/default/functions/hello"] = tt.fail })
			}
			s, out, _ := testStreams()
			err := runDeploy(t.Context(), deployOpts(f, s, tt.deploy, tt.set))
			if err == nil {
				t.Fatalf("runDeploy succeeded, want error %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q\nwant    %q", err, tt.want)
			}
			if got := isUsage(err); got != tt.usage {
				t.Errorf("usage error = %v, want %v", got, tt.usage)
			}
			puts := len(f.paths(http.MethodPut))
			if got := puts > 0; got != tt.wantPut {
				t.Errorf("deploy sent %d PUTs; want a PUT: %v", puts, tt.wantPut)
			}
			if out.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	env := []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}}
	got, err := applyEnv(env, []string{"A=9", "C=3", "B-"})
	if err != nil {
		t.Fatal(err)
	}
	want := []api.EnvVar{{Name: "A", Value: "9"}, {Name: "C", Value: "3"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("applyEnv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}}, env); diff != "" {
		t.Errorf("applyEnv changed its input (-before +after):\n%s", diff)
	}
	// A value may end in '-' or be empty.
	got, err = applyEnv(nil, []string{"X=a-", "Y="})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.EnvVar{{Name: "X", Value: "a-"}, {Name: "Y", Value: ""}}, got); diff != "" {
		t.Errorf("applyEnv (-want +got):\n%s", diff)
	}
}

func TestDeployWaitsForTheRevisionToBeReady(t *testing.T) {
	const pullErr = `pull image example.test/hello:v2: not found`
	v2 := func(o *DeployOptions) { o.Image, o.Set["image"] = "example.test/hello:v2", true }

	t.Run("a revision that never gets Ready keeps the traffic where it was", func(t *testing.T) {
		f := newFakeAPI(t)
		f.deploy(t, helloV1())
		f.edit(func() { f.stuck["hello-00002"] = pullErr })
		s, out, errb := testStreams()
		o := deployOpts(f, s, "hello", v2)
		o.Wait, o.Poll = 300*time.Millisecond, 10*time.Millisecond
		err := runDeploy(t.Context(), o)
		want := `function "hello": revision hello-00002 has no Ready replica after 300ms (replica hello-00002-stuck: ` + pullErr +
			`); the traffic stays on hello-00001 (surge describe hello shows more)`
		if err == nil || err.Error() != want {
			t.Fatalf("error = %v, want %s", err, want)
		}
		if out.Len() > 0 {
			t.Errorf("stdout = %q, want nothing", out)
		}
		// What the replica reports is said as soon as it is seen, once.
		if got, want := errb.String(), "waiting for hello-00002 to be Ready: replica hello-00002-stuck: "+pullErr+"\n"; got != want {
			t.Errorf("stderr = %q, want %q", got, want)
		}
		f.edit(func() {
			if got := f.traffic["hello"].Spec.Targets; len(got) != 1 || got[0].Revision != "hello-00001" {
				t.Errorf("traffic %v, want all on hello-00001", got)
			}
		})

		// Deploying it again changes nothing, and fails the same way: a
		// retried deploy does not pass where the first one failed.
		s, out, _ = testStreams()
		o = deployOpts(f, s, "hello", v2)
		o.Wait, o.Poll = 100*time.Millisecond, 10*time.Millisecond
		if err := runDeploy(t.Context(), o); err == nil || !strings.Contains(err.Error(), "revision hello-00002 has no Ready replica after 100ms") {
			t.Errorf("the same deploy again: %v, want it to fail as the first", err)
		}

		// A split set by hand meanwhile is named as it is.
		f.edit(func() {
			f.traffic["hello"].Spec.Targets = []api.TrafficTarget{{Revision: "hello-00001", Percent: 90}, {Revision: "hello-00002", Percent: 10}}
		})
		s, _, _ = testStreams()
		o = deployOpts(f, s, "hello", v2)
		o.Wait, o.Poll = 50*time.Millisecond, 10*time.Millisecond
		if err := runDeploy(t.Context(), o); err == nil || !strings.Contains(err.Error(), "the traffic stays on hello-00001 (90%), hello-00002 (10%)") {
			t.Errorf("with a split: %v", err)
		}
	})

	t.Run("--no-wait returns at once", func(t *testing.T) {
		f := newFakeAPI(t)
		f.deploy(t, helloV1())
		f.edit(func() { f.stuck["hello-00002"] = pullErr })
		s, out, errb := testStreams()
		o := deployOpts(f, s, "hello", v2) // Wait 0, as --no-wait sets it
		if err := runDeploy(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		if got, want := out.String(), "function \"hello\" updated: revision hello-00002 takes all traffic once a replica is Ready\n"; got != want {
			t.Errorf("stdout = %q, want %q", got, want)
		}
		if errb.Len() > 0 {
			t.Errorf("stderr = %q, want nothing", errb)
		}
	})

	t.Run("an interrupted wait says the deploy stands", func(t *testing.T) {
		f := newFakeAPI(t)
		f.edit(func() { f.stuck["hello-00001"] = pullErr })
		s, _, _ := testStreams()
		o := deployOpts(f, s, "hello", func(o *DeployOptions) { o.Image, o.Set["image"] = "example.test/hello:v2", true })
		o.Wait, o.Poll = time.Minute, 10*time.Millisecond
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		err := runDeploy(ctx, o)
		want := `function "hello": stopped waiting for revision hello-00001, which has no Ready replica yet (replica hello-00001-stuck: ` + pullErr +
			`); requests to it wait for a Ready replica`
		if err == nil || err.Error() != want {
			t.Fatalf("error = %v, want %s", err, want)
		}
	})
}

func TestDeployRetriesAWriteThatRacedAStatusChange(t *testing.T) {
	f := newFakeAPI(t)
	f.deploy(t, helloV1())
	// A rollout ending between the deploy's read and its write changes
	// the function's status, and so its resourceVersion: 409 once.
	f.edit(func() {
		f.failOnce["PUT /v1/namespaces/default/functions/hello"] = api.NewError(http.StatusConflict, api.ReasonConflict, "function \"hello\" was changed since you read it")
	})
	s, out, _ := testStreams()
	if err := runDeploy(t.Context(), deployOpts(f, s, "hello", func(o *DeployOptions) { o.Env, o.Set["env"] = []string{"A=1"}, true })); err != nil {
		t.Fatalf("deploy after one conflict: %v", err)
	}
	if got, want := out.String(), "function \"hello\" updated: revision hello-00002 takes all traffic\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if n := len(f.paths(http.MethodPut)); n != 2 {
		t.Errorf("%d PUTs, want 2 (one refused, one retried)", n)
	}
}

func TestDurationFlag(t *testing.T) {
	var timeout, window, grace api.Duration
	grace = api.Seconds(30)
	fs := pflag.NewFlagSet("deploy", pflag.ContinueOnError)
	fs.Var(durationFlag{&timeout}, "timeout", "")
	fs.Var(durationFlag{&window}, "window", "")
	fs.Var(durationFlag{&grace}, "scale-to-zero-grace", "")
	if err := fs.Parse([]string{"--timeout", "90s", "--window=1m", "--scale-to-zero-grace", ""}); err != nil {
		t.Fatal(err)
	}
	if timeout != api.Seconds(90) || window != api.Seconds(60) || grace != (api.Duration{}) {
		t.Errorf("timeout %v, window %v, grace %v; want 1m30s, 1m and zero", timeout, window, grace)
	}
	if got := fs.Lookup("timeout").Value.String(); got != "1m30s" {
		t.Errorf("--timeout reads back as %q, want 1m30s", got)
	}
	err := fs.Parse([]string{"--timeout", "30"})
	if err == nil || !strings.Contains(err.Error(), api.DurationRule) {
		t.Errorf("--timeout 30: %v, want %q", err, api.DurationRule)
	}
}
