package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/imagebuild"
)

// verbEnv runs whole command lines, as a user types them, against the
// seeded fake API: with a config file, a folder of files, fake image tools
// (a fixed image, a push that records), a clock that moves 100ms at each
// look, and a gateway that echoes the request.
type verbEnv struct {
	t      *testing.T
	f      *fakeAPI
	dir    string
	config string
	gw     *httptest.Server

	mu       sync.Mutex
	now      time.Time
	pushed   []string
	buildErr error // what Build returns, after writing compilerOut
	compiler string
	pushErr  error
	// env is the environment the verbs see.
	env map[string]string
}

func newVerbEnv(t *testing.T) *verbEnv {
	t.Helper()
	e := &verbEnv{t: t, f: seededFake(t), dir: t.TempDir(), now: testNow}
	e.config = filepath.Join(e.dir, "config.yaml")
	e.write("config.yaml", "server: "+e.f.URL+"\ntoken: "+fakeToken+"\n")
	e.gw = httptest.NewServer(http.HandlerFunc(echoRequest))
	t.Cleanup(e.gw.Close)
	return e
}

// echoRequest is the fake gateway and function: it answers what it got,
// and 500 for /fail; asked with Surge-Debug, it names the replica and
// revision as the gateway does.
func echoRequest(w http.ResponseWriter, r *http.Request) {
	w.Header()["Date"] = nil
	w.Header().Set("Content-Type", "text/plain")
	if r.Header.Get("Surge-Debug") != "" {
		w.Header().Set("Surge-Served-By", "hello-00001-x7k2p")
		w.Header().Set("Surge-Revision", "hello-00001")
	}
	if r.URL.Path == "/fail" {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, "boom")
		return
	}
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s host=%s\n", r.Method, r.URL.RequestURI(), r.Host)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		if k != "Accept-Encoding" && k != "Content-Length" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ","))
	}
	fmt.Fprintf(w, "body: %q\n", b)
}

// write makes a file under the env's folder.
func (e *verbEnv) write(name, text string) {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// fixedImage is the image every fake build and load gives: one layer,
// always the same digest.
func fixedImage() (v1.Image, error) {
	layer := static.NewLayer([]byte("a function"), types.OCILayer)
	return mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
}

func (e *verbEnv) deps() deps {
	dialer := &net.Dialer{}
	gw := strings.TrimPrefix(e.gw.URL, "http://")
	return deps{
		now: func() time.Time {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.now = e.now.Add(100 * time.Millisecond)
			return e.now
		},
		getenv: func(k string) string {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.env[k]
		},
		readFile: os.ReadFile,
		build: func(_ context.Context, o imagebuild.Options) (v1.Image, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.buildErr != nil {
				io.WriteString(o.Output, e.compiler)
				return nil, e.buildErr
			}
			return fixedImage()
		},
		load: func(string) (v1.Image, error) { return fixedImage() },
		push: func(_ context.Context, img v1.Image, ref string, _ imagebuild.PushOptions) (string, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.pushErr != nil {
				return "", e.pushErr
			}
			e.pushed = append(e.pushed, ref)
			d, err := img.Digest()
			if err != nil {
				return "", err
			}
			repo, _, _ := strings.Cut(ref, ":latest")
			return repo + "@" + d.String(), nil
		},
		poll: time.Millisecond,
		// Every function's URL reaches the fake gateway.
		http: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, gw)
		}}},
	}
}

// run runs one command line and returns its transcript: the line, its
// stdout, its stderr and its exit code, with the env's paths and URLs
// written as {{DIR}} and {{API}}.
func (e *verbEnv) run(line, stdin string) string {
	e.t.Helper()
	expand := strings.NewReplacer("{{DIR}}", e.dir, "{{API}}", e.f.URL).Replace
	args := []string{"--config", e.config}
	for _, a := range strings.Fields(expand(line)) {
		if a == "''" {
			a = "" // an empty argument, as a shell passes ''
		}
		args = append(args, a)
	}
	var out, errb bytes.Buffer
	code := execute(e.t.Context(), args, Streams{In: strings.NewReader(stdin), Out: &out, Err: &errb}, "test", e.deps())
	hide := strings.NewReplacer(e.dir, "{{DIR}}", e.f.URL, "{{API}}", strings.TrimPrefix(e.f.URL, "http://"), "{{API_HOST}}",
		runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH, "{{GO}}").Replace
	var b strings.Builder
	fmt.Fprintf(&b, "$ surge %s\n", line)
	b.WriteString(hide(out.String()))
	if errb.Len() > 0 {
		b.WriteString("--- stderr\n" + hide(errb.String()))
	}
	fmt.Fprintf(&b, "--- exit %d\n\n", code)
	return b.String()
}

const twoFunctions = `# two functions
functions:
  - name: hi
    build: src
    env:
      GREETING: hello
      A: "1"
    scaling:
      minScale: 1
  - name: echo
    image: example.test/echo:v1
    readiness:
      path: /healthz
      period: 5s
`

// TestVerbsGolden runs each verb's command lines through Execute against
// the fake, and compares the transcripts with testdata/verbs/NAME.golden
// (-update rewrites them).
func TestVerbsGolden(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *verbEnv)
		lines []string
		stdin string
	}{
		{name: "init", lines: []string{"init hi --dir {{DIR}}/hi", "init hi --dir {{DIR}}/hi", "init Hi", "init hi --lang rust"}},
		{name: "deploy-folder", setup: func(e *verbEnv) {
			e.write("src/main.go", "package main\n")
			e.f.edit(func() { e.f.slow["hi-00001"] = 3 })
		}, lines: []string{"deploy hi {{DIR}}/src --arch amd64", "deploy hi {{DIR}}/src --arch amd64", "describe hi"}},
		{name: "deploy-manifest", setup: func(e *verbEnv) {
			e.write("surge.yaml", twoFunctions)
			e.write("src/main.go", "package main\n")
		}, lines: []string{"deploy -f {{DIR}}/surge.yaml --arch amd64", "apply -f {{DIR}}/surge.yaml echo", "deploy -f {{DIR}}/surge.yaml --env X=1", "describe hi"}},
		{name: "deploy-archive", lines: []string{"deploy app --archive {{DIR}}/app.tar --min-scale 1"}},
		{name: "deploy-flags", lines: []string{
			"deploy hello --command /bin/app --arg --fast --arg -v --readiness-path /ready --label tier=web --label team- --pull-secret ghcr --no-wait",
			"describe hello",
			"deploy hello --command= --arg= --readiness-path= --pull-secret=",
		}},
		{name: "deploy-crash", setup: func(e *verbEnv) {
			e.f.edit(func() {
				e.f.stuck["hello-00004"] = "exited with code 2 before it was ready"
				e.f.logs["hello-00004-stuck"] = "hello: reading config\npanic: open /etc/app.conf: no such file or directory\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:12 +0x1d\nexit status 2\n"
			})
			e.f.addNode("node-a", "2", "4Gi")
		}, lines: []string{"deploy hello --env A=1"}},
		{name: "deploy-no-node-fits", setup: func(e *verbEnv) {
			e.f.edit(func() { e.f.unscheduled["hello-00004"] = "no node fits: 2 nodes: 2 not enough memory" })
		}, lines: []string{"deploy hello --cpu 3", "deploy hello --memory 8Gi", "deploy hello --memory 3Gi"}},
		{name: "deploy-build-error", setup: func(e *verbEnv) {
			e.buildErr = errors.New("build src: go build failed: exit status 1")
			e.compiler = "# hi\n./main.go:5:2: undefined: fmt\n./main.go:9:1: missing return\n"
		}, lines: []string{"deploy hi {{DIR}}/src --arch amd64"}},
		{name: "deploy-too-large", setup: func(e *verbEnv) {
			e.pushErr = fmt.Errorf("push x: %w", &imagebuild.TooLargeError{Message: "blob is larger than the registry's limit of 4294967296 bytes"})
		}, lines: []string{"deploy hi --archive {{DIR}}/big.tar"}},
		{name: "deploy-bad-manifest", setup: func(e *verbEnv) {
			e.write("surge.yaml", "functions:\n  - name: hi\n    build: .\n    scaling:\n      minScale: lots\n")
			e.write("two.yaml", "functions:\n  - name: hi\n    image: x\n    prot: 80\n")
			e.write("three.yaml", "functions:\n  - name: hi\n    image: x\n    scaling:\n      minScale: 3\n      maxScale: 2\n")
		}, lines: []string{"deploy -f {{DIR}}/surge.yaml", "apply -f {{DIR}}/two.yaml", "apply -f {{DIR}}/three.yaml", "apply -f {{DIR}}/none.yaml"}},
		{name: "invoke", lines: []string{
			"invoke hello",
			"invoke hello -X PUT -d hi -H X-A:1 -H X-B:2 --path /things?x=1 -v",
			"invoke hello --revision hello-00002 --gateway http://gw.example:8080",
			"invoke hello --path /fail",
			"invoke hello -d @{{DIR}}/nope.json",
		}},
		{name: "ls", lines: []string{"ls", "ls -A", "revisions hello"}},
		{name: "logs", lines: []string{"logs hello --revision hello-00003 --tail 3", "logs hello --replica hello-00003-j8k9l --tail 2 -f"}},
		{name: "nodes", lines: []string{"nodes", "nodes node-2", "nodes nope"}},
		{name: "version", lines: []string{"version", "version --client", "version --api http://127.0.0.1:1"}},
		{name: "scale-rm", lines: []string{"scale hello --min 2 --max 4", "rm world", "rm world"}},
		{name: "traffic", lines: []string{
			"traffic hello",
			"traffic hello hello-00001=90 hello-00003=10",
			"traffic hello hello-00001=50",
			"traffic hello hello-00001=50 hello-00001=50",
			"traffic hello nope=100",
			"traffic hello hello-00001=lots",
			"traffic hello hello-00009=100",
			"traffic hello @latest=100 -o yaml",
		}},
		{name: "tag", lines: []string{
			"tag hello hello-00001 old",
			"traffic hello",
			"revisions hello",
			"tag hello hello-00002 old",
			"traffic hello old=20 @latest=80",
			"describe hello",
			"tag hello hello-00002 prev",
			"untag hello prev",
			"untag hello prev",
			"tag hello hello-00002 Bad_Tag",
		}},
		{name: "canary", lines: []string{
			"deploy hello --env A=1 --canary 10,50,100 --step 30s",
			"rollout status hello",
			"deploy hello --canary 20,100",
			"deploy hello --env A=2 --no-wait",
			"rollout status hello -w",
			"deploy hello --canary off --keep 3",
			"deploy hello --step 10s",
			"deploy hello --canary 10,x",
			"deploy hello --canary 50,10",
			"rollout status world",
			"rollout status nope",
		}},
		{name: "canary-rolled-back", setup: func(e *verbEnv) {
			bad := api.RevisionHealth{Requests: 20, Errors: 20, P99: api.Duration{Duration: 3 * time.Millisecond}}
			good := api.RevisionHealth{Requests: 180, P99: api.Duration{Duration: 2 * time.Millisecond}}
			e.f.edit(func() {
				e.f.canary["hello"] = []api.RolloutStatus{{Phase: api.RolloutRolledBack, Percent: 10,
					Reason:   "error rate 100.0% against 0.0% for hello-00003 (more than 5.0 points worse), over 20 requests at 10%",
					Analysis: &api.RolloutAnalysis{Canary: bad, Baseline: good}}}
			})
		}, lines: []string{
			"deploy hello --env A=1 --canary 10,50,100",
			"rollout status hello",
			"revisions hello",
		}},
		{name: "rollback", lines: []string{
			"rollback world",
			"rollback hello --to hello-00001",
			"rollout status hello",
			"rollback hello",
			"rollback hello",
			"rollback hello --to hello-00009",
			"rollback nope",
		}},
		{name: "revisions-rm", lines: []string{
			"revisions rm hello-00003",
			"revisions rm hello-00001",
			"revisions rm hello-00001",
			"revisions rm hello",
			"revisions hello",
		}},
		{name: "build", setup: func(e *verbEnv) { e.write("src/main.go", "package main\n") }, lines: []string{"build {{DIR}}/src -t hi:v1 --arch amd64"}},
		{name: "contexts", setup: func(e *verbEnv) {
			e.write("wrong-token", "s3cret-token\n")
			e.write("token", fakeToken+"\n")
		}, lines: []string{
			"config get-contexts",
			"login {{API}} --token-file {{DIR}}/wrong-token --name lab",
			"login {{API}} --token-file {{DIR}}/token --name lab",
			"config get-contexts",
			"config use-context default",
			"config current-context",
			"config use-context nope",
			"ls --context lab",
		}},
		{name: "token", lines: []string{
			"token create --role viewer --description dashboard --file {{DIR}}/viewer-token",
			"token create --role viewer --file {{DIR}}/viewer-token",
			"token create --role gateway --file -",
			"token create --role root --file {{DIR}}/root-token",
			"token create --role viewer",
			"token ls",
			"token ls -o yaml",
			"token revoke 3d4e5f607182",
			"token revoke 3d4e5f607182",
			"token revoke 0a1b2c3d4e5f",
			"token revoke 4e5f60718293.fake-secret-of-4e5f60718293",
			"token ls",
		}},
		{name: "token-file", setup: func(e *verbEnv) {
			e.write("config.yaml", "server: "+e.f.URL+"\n")
			e.write("token", fakeToken+"\n")
			e.write("wrong-token", "s3cret-token\n")
			e.write("empty-token", "\n")
		}, lines: []string{
			"ls",
			"ls --token-file {{DIR}}/token",
			"ls --token-file {{DIR}}/wrong-token",
			"ls --token-file {{DIR}}/empty-token",
			"ls --token-file {{DIR}}/missing-token",
			"ls --token " + fakeToken,
		}},
		{name: "token-env", setup: func(e *verbEnv) {
			e.write("config.yaml", "server: "+e.f.URL+"\n")
			e.write("token", fakeToken+"\n")
			e.env = map[string]string{"SURGE_TOKEN": fakeToken}
			e.write("wrong-token", "s3cret-token\n")
		}, lines: []string{
			"nodes",
			"nodes --token-file {{DIR}}/wrong-token",
		}},
		{name: "pull-secret", stdin: "hunter2\n", lines: []string{
			"pull-secret set ghcr --registry ghcr.io --username me --password-stdin",
			"pull-secret ls",
			"pull-secret set bad --registry https://ghcr.io/x --password-stdin",
			"pull-secret set ghcr --registry ghcr.io",
			"pull-secret rm ghcr",
			"pull-secret rm ghcr",
		}},
		{name: "completion", lines: []string{
			"__complete describe h",
			"__complete logs hello --revision hello-0000",
			"__complete logs hello --replica hello-00003-",
			"__complete nodes node",
			"__complete config use-context ''",
			"__complete invoke hello --revision ''",
			"__complete deploy ''",
			"__complete pull-secret rm ''",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newVerbEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			var b strings.Builder
			for _, l := range tt.lines {
				b.WriteString(e.run(l, tt.stdin))
			}
			golden(t, filepath.Join("verbs", tt.name), []byte(b.String()))
		})
	}
}

// TestInitDeploysAsItIs: the manifest init writes is valid, builds its own
// folder, and names the function.
func TestInitDeploysAsItIs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hi")
	s, _, _ := testStreams()
	if err := runInit(t.Context(), &InitOptions{Streams: s, Name: "hi", Lang: "go", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	m, err := readManifest(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Functions) != 1 || m.Functions[0].Name != "hi" || m.resolve(m.Functions[0].Build) != dir {
		t.Errorf("init's manifest: %+v, want hi built from %s", m.Functions, dir)
	}
	main, _ := os.ReadFile(filepath.Join(dir, "main.go"))
	if !strings.Contains(string(main), "hello from hi") {
		t.Errorf("main.go does not answer as hi:\n%s", main)
	}
	// Deploying the folder with no argument finds its manifest.
	o := &DeployOptions{Set: map[string]bool{}}
	if err := o.takeArgs([]string{dir}); err != nil || o.Manifest != filepath.Join(dir, ManifestFile) {
		t.Errorf("deploy %s: manifest %q, %v", dir, o.Manifest, err)
	}
}

// TestDeployArgs pins how deploy reads NAME and DIR.
func TestDeployArgs(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "my_fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, tt := range []struct {
		args           []string
		set            string
		name, src, err string
	}{
		{args: []string{"hello"}, name: "hello"},
		{args: []string{"./hello"}, name: "hello", src: "./hello"},
		{args: []string{"./My_Fn"}, err: "is not a function name"},
		{args: []string{"my_fn"}, err: `folder "my_fn" has no surge.yaml`},
		{args: []string{"hello", "./src"}, name: "hello", src: "./src"},
		{args: []string{"hello"}, set: "image", name: "hello"},
		{args: nil, set: "image", err: "give the function's NAME"},
		{args: []string{"hello", "./src"}, set: "archive", err: "not two of them"},
	} {
		o := &DeployOptions{Set: map[string]bool{}}
		if tt.set != "" {
			o.Set[tt.set] = true
		}
		err := o.takeArgs(tt.args)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("deploy %v: %v, want an error with %q", tt.args, err, tt.err)
			}
		case err != nil || o.Name != tt.name || o.Dir != tt.src:
			t.Errorf("deploy %v: name %q dir %q, %v; want %q %q", tt.args, o.Name, o.Dir, err, tt.name, tt.src)
		}
	}
}

func TestManifestErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"", "m.yaml: is empty: list the functions under \"functions:\""},
		{"functions: [", "m.yaml:1: not YAML: did not find expected node content"},
		{"functions: []\n", "m.yaml:1: functions: lists no function"},
		{"function:\n  - name: a\n", "m.yaml:1: function: unknown field; known: functions"},
		{"functions:\n  - name: a\n    image: x\n    port: http\n", `m.yaml:4: functions[0].port: want a whole number, got "http"`},
		{"functions:\n  - name: a\n    image: x\n    timeout: 5\n", `m.yaml:4: functions[0].timeout: want a duration like "30s" or "2m", got "5"`},
		{"functions:\n  - name: a\n    image: x\n    env: [A=1]\n", "m.yaml:4: functions[0].env: want a mapping of names to strings, got a list"},
		{"functions:\n  - name: a\n", "m.yaml:2: functions[0]: give exactly one of build (a Go source folder), image or archive"},
		{"functions:\n  - name: a\n    image: x\n  - name: a\n    image: y\n", `m.yaml:4: functions[1].name: "a" is listed twice`},
		{"functions:\n  - name: A\n    image: x\n", `m.yaml:2: functions[0].name: "A" ` + api.NameRule},
		{"functions:\n  - name: a\n    image: x\n    env:\n      PORT: \"1\"\n", "m.yaml:5: functions[0].env.PORT: PORT is set by Surge from spec.port"},
		{"functions:\n  - name: a\n    image: x\n    resources:\n      cpu: lots\n", `m.yaml:5: functions[0].resources.cpu: cpu quantity "lots": want cores like "0.5" or millicores like "250m"`},
		{"functions:\n  - name: a\n    image: x\n    readiness:\n      path: ready\n", `m.yaml:5: functions[0].readiness.path: "ready" must start with '/' and have no spaces`},
		{"functions:\n  - name: a\n    image: x\n    httpsRedirect: yes\n", `m.yaml:4: functions[0].httpsRedirect: want true or false, got "yes"`},
	} {
		_, err := parseManifest("m.yaml", []byte(tt.text))
		if err == nil || err.Error() != tt.want {
			t.Errorf("manifest %q:\n got %v\nwant %s", tt.text, err, tt.want)
		}
	}
}

// TestReadmeManifest: the manifest the README shows is a valid one.
func TestReadmeManifest(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\nfunctions:")
	text, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README shows no manifest (```yaml\\nfunctions:)")
	}
	m, err := parseManifest("README.md", []byte("functions:"+text))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Functions) != 1 || m.Functions[0].Scaling.StableWindow != time.Minute || !m.Functions[0].HTTPSRedirect {
		t.Errorf("README manifest read as %+v", m.Functions)
	}
}
