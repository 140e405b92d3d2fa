package cli

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
)

// writeConfig writes a client config with the fake's token and a server
// that --api overrides, and returns its path.
func writeConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := "server: https://config-server.invalid:7070\ntoken: " + fakeToken + "\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "wrong-token"), []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func notFound(name string) string {
	return "surge: function \"" + name + "\" not found: `surge ls` lists them"
}

// TestExecute runs whole command lines through Execute against the fake
// and checks the exit code, stdout, and the exact one-line error on stderr.
// In args and want, {{API}} is the fake's URL and {{CONFIG}} the config
// file's path.
func TestExecute(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name     string
		args     string
		fail     map[string]*api.Error // routes of the fake that answer an error
		wantCode int
		wantOut  string // a prefix of stdout
		wantErr  string // stderr without its newline; "" for nothing
	}{
		// Success.
		{name: "deploy new", args: "deploy new --image example.test/new:v1", wantCode: 0,
			wantOut: "function \"new\" created: revision new-00001 takes all traffic\n"},
		{name: "deploy unchanged", args: "deploy hello", wantCode: 0,
			wantOut: "function \"hello\" unchanged: revision hello-00003\n"},
		{name: "deploy env", args: "deploy hello -e A=1 --env B=2", wantCode: 0,
			wantOut: "function \"hello\" updated: revision hello-00004 takes all traffic\n"},
		{name: "ls", args: "ls", wantCode: 0, wantOut: "NAME    URL"},
		{name: "list alias", args: "list -o json", wantCode: 0, wantOut: "[\n"},
		{name: "rm", args: "rm hello world", wantCode: 0,
			wantOut: "function \"hello\" deleted\nfunction \"world\" deleted\n"},
		{name: "version", args: "version", wantCode: 0,
			wantOut: "client: test (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\nserver: v9.9.9-fake ({{API}})\n"},
		{name: "version of an unreachable server", args: "version --api " + closed.URL, wantCode: 0,
			wantOut: "client: test (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\nserver: unknown (API server unreachable at " + closed.URL},

		// Mistakes found before any request: exit 1 when the value is
		// wrong, exit 2 when the command line is.
		{name: "bad name", args: "deploy Bad_Name --image x", wantCode: 1,
			wantErr: `surge: function "Bad_Name": name must be 1 to 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit`},
		{name: "bad port", args: "deploy hello --port 70000", wantCode: 1,
			wantErr: `surge: function "hello": --port must be between 1 and 65535`},
		{name: "three bad flags", args: "deploy hello --port 0 --cpu 0.0001 --memory 3Mi --timeout 2h", wantCode: 1,
			wantErr: `surge: function "hello": --cpu cpu quantity "0.0001": finer than one millicore; ` +
				`--memory must be between 4Mi and 1Ti, got "3Mi"; ` +
				`--timeout must be between 1s and 1h0m0s, got 2h`},
		{name: "scale names its own flags", args: "scale hello --min -1", wantCode: 1,
			wantErr: `surge: function "hello": --min must not be negative`},
		{name: "deploy names its own flags", args: "deploy hello --min-scale -1", wantCode: 1,
			wantErr: `surge: function "hello": --min-scale must not be negative`},
		{name: "scale with only how to wait", args: "scale hello --no-wait", wantCode: 2,
			wantErr: `surge: surge scale hello: give at least one of --min, --max, --target, --metric, --scale-to-zero-grace`},
		{name: "negative wait", args: "deploy hello --image x --wait-timeout -1s", wantCode: 2,
			wantErr: `surge: --wait-timeout -1s: must not be negative`},
		{name: "env PORT", args: "deploy hello --env PORT=80", wantCode: 1,
			wantErr: `surge: function "hello": --env PORT is set by Surge from spec.port`},
		{name: "bad namespace", args: "-n Bad_NS deploy hello --image x", wantCode: 1,
			wantErr: `surge: function "hello": --namespace "Bad_NS" ` + api.NameRule},
		{name: "bad rm name", args: "rm hello Bad_Name", wantCode: 1,
			wantErr: `surge: function "Bad_Name": name ` + api.NameRule},
		{name: "new function without image", args: "deploy new --port 80", wantCode: 2,
			wantErr: `surge: function "new" does not exist yet: give its image with --image REF, or a folder to build: surge deploy new DIR`},
		{name: "bad env syntax", args: "deploy hello --env JUSTANAME", wantCode: 2,
			wantErr: `surge: --env "JUSTANAME": want NAME=VALUE, or NAME- to remove it`},
		{name: "bad output", args: "ls -o xml", wantCode: 2,
			wantErr: `surge: --output "xml": want table, json or yaml`},
		{name: "bad output describe", args: "describe hello -o wide", wantCode: 2,
			wantErr: `surge: --output "wide": want table, json or yaml`},
		{name: "unknown flag", args: "ls --bogus", wantCode: 2,
			wantErr: "surge: unknown flag: --bogus (see `surge ls --help`)"},
		{name: "unknown shorthand", args: "deploy hello -z", wantCode: 2,
			wantErr: "surge: unknown shorthand flag: 'z' in -z (see `surge deploy --help`)"},
		{name: "flag not a duration", args: "deploy hello --timeout abc", wantCode: 2,
			wantErr: `surge: invalid argument "abc" for "--timeout" flag: ` + api.DurationRule + " (see `surge deploy --help`)"},
		{name: "flag without a unit", args: "scale hello --window 60", wantCode: 2,
			wantErr: `surge: invalid argument "60" for "--window" flag: ` + api.DurationRule + " (see `surge scale --help`)"},
		{name: "flag not a number", args: "deploy hello --port abc", wantCode: 2,
			wantErr: `surge: invalid argument "abc" for "--port" flag: strconv.ParseInt: parsing "abc": invalid syntax (see ` + "`surge deploy --help`)"},
		{name: "unknown command", args: "deploi hello", wantCode: 2,
			wantErr: `surge: unknown command "deploi" for "surge" Did you mean this? deploy`},
		{name: "missing arg deploy", args: "deploy --image x", wantCode: 2,
			wantErr: "surge: give the function's NAME: surge deploy NAME --image REF"},
		{name: "too many args deploy", args: "deploy a b c", wantCode: 2,
			wantErr: "surge: surge deploy: accepts at most 2 arg(s), received 3 (usage: surge deploy [NAME] [DIR | --image REF | --archive FILE | -f surge.yaml] [flags])"},
		{name: "dir and image", args: "deploy hello ./x --image y", wantCode: 2,
			wantErr: "surge: give a source DIR, --image or --archive, not two of them"},
		{name: "missing arg describe", args: "describe", wantCode: 2,
			wantErr: "surge: surge describe: accepts 1 arg(s), received 0 (usage: surge describe NAME [flags])"},
		{name: "missing arg revisions", args: "revisions", wantCode: 2,
			wantErr: "surge: surge revisions: accepts 1 arg(s), received 0 (usage: surge revisions NAME [flags])"},
		{name: "missing arg rm", args: "rm", wantCode: 2,
			wantErr: "surge: surge rm: requires at least 1 arg(s), only received 0 (usage: surge rm NAME... [flags])"},
		{name: "extra arg", args: "ls hello", wantCode: 2,
			wantErr: `surge: surge ls: unknown command "hello" for "surge ls" (usage: surge ls [flags])`},

		// The server says no: exit 1, one line naming the object.
		{name: "401", args: "describe hello --token-file {{DIR}}/wrong-token", wantCode: 1,
			wantErr: "surge: function \"hello\": invalid or revoked token: log in again with `surge login URL --token-file FILE`, or pass --token-file FILE"},
		{name: "401 on ls", args: "ls --token-file {{DIR}}/wrong-token", wantCode: 1,
			wantErr: "surge: functions \"default\": invalid or revoked token: log in again with `surge login URL --token-file FILE`, or pass --token-file FILE"},
		{name: "token on the command line", args: "ls --token " + fakeToken, wantCode: 2,
			wantErr: "surge: --token shows the token to every user of this machine (ps): put it in a file and pass --token-file FILE, or set SURGE_TOKEN"},
		{name: "403", args: "deploy hello --image x",
			fail: map[string]*api.Error{"PUT /v1/namespaces/default/functions/hello": api.NewError(http.StatusForbidden,
				api.ReasonForbidden, "token t1 (role reader) may not write functions")},
			wantCode: 1, wantErr: `surge: function "hello": token t1 (role reader) may not write functions`},
		{name: "404 describe", args: "describe nosuch", wantCode: 1, wantErr: notFound("nosuch")},
		{name: "404 revisions", args: "revisions nosuch", wantCode: 1, wantErr: notFound("nosuch")},
		{name: "404 rm", args: "rm nosuch", wantCode: 1, wantErr: notFound("nosuch")},
		{name: "404 invoke", args: "invoke nosuch", wantCode: 1, wantErr: notFound("nosuch")},
		{name: "404 logs", args: "logs nosuch", wantCode: 1, wantErr: notFound("nosuch")},
		{name: "409", args: "deploy hello --image x",
			fail: map[string]*api.Error{"PUT /v1/namespaces/default/functions/hello": api.NewError(http.StatusConflict,
				api.ReasonConflict, `function "hello" was changed since you read it: read it again and retry`)},
			wantCode: 1, wantErr: `surge: function "hello" changed while deploying: run the deploy again`},
		{name: "422 with several causes", args: "deploy hello --image x",
			fail: map[string]*api.Error{"PUT /v1/namespaces/default/functions/hello": api.Invalid(api.KindFunction, "hello", api.FieldErrors{
				{Field: "spec.image", Message: "is not in the registry"},
				{Field: "spec.readiness.path", Message: "is\nnot served"},
			})},
			wantCode: 1, wantErr: `surge: function "hello": --image is not in the registry; --readiness-path is not served`},
		{name: "500", args: "ls",
			fail: map[string]*api.Error{"GET /v1/namespaces/default/functions": api.NewError(http.StatusInternalServerError,
				api.ReasonInternal, "internal error: the server log has the details")},
			wantCode: 1, wantErr: `surge: internal error: the server log has the details`},

		// No server.
		{name: "unreachable", args: "ls --api " + closed.URL, wantCode: 1,
			wantErr: "surge: cannot reach the API at " + strings.TrimPrefix(closed.URL, "http://") + " (connect: connection refused): " +
				"is Surge running? Start it with `surge up`, or check the server of your context (surge config get-contexts) or --api"},
		{name: "bad --api", args: "ls --api localhost:7070", wantCode: 1,
			wantErr: `surge: server "localhost:7070" is not an API URL like https://127.0.0.1:7070`},
		{name: "no config", args: "ls --api= --config {{CONFIG}}.missing", wantCode: 1,
			wantErr: "surge: no client config at {{CONFIG}}.missing: start Surge with `surge up` (it writes one), or `surge login URL --token-file FILE`, or pass --api and --token-file"},
		{name: "unknown context", args: "ls --context nope", wantCode: 1,
			wantErr: "surge: --context \"nope\" is not in {{CONFIG}}: `surge config get-contexts` lists them"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seededFake(t)
			f.edit(func() {
				for route, e := range tt.fail {
					f.fail[route] = e
				}
			})
			config := writeConfig(t)
			expand := strings.NewReplacer("{{API}}", f.URL, "{{CONFIG}}", config, "{{DIR}}", filepath.Dir(config)).Replace
			args := append([]string{"--api", f.URL, "--config", config}, strings.Fields(expand(tt.args))...)
			s, out, errb := testStreams()

			code := Execute(t.Context(), args, s, "test")

			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, errb)
			}
			if want := expand(tt.wantOut); !strings.HasPrefix(out.String(), want) {
				t.Errorf("stdout = %q, want it to start with %q", out, want)
			}
			if tt.wantErr == "" {
				if errb.Len() > 0 {
					t.Errorf("stderr = %q, want nothing", errb)
				}
				return
			}
			if got, want := errb.String(), expand(tt.wantErr)+"\n"; got != want {
				t.Errorf("stderr:\n got %q\nwant %q", got, want)
			}
			if n := strings.Count(errb.String(), "\n"); n != 1 {
				t.Errorf("stderr has %d lines, want exactly one", n)
			}
		})
	}
}
