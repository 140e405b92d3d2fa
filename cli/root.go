// Package cli is the `surge` command line: one file per verb, each with an
// Options struct, a newXCmd that only turns flags into options, and a runX
// that does the work (tested with buffers and a fake API).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/imagebuild"
)

// Streams are the command's standard input and outputs.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// Globals are the flags every verb has. The server verbs, which live where
// the roles are composed (cmd/surge), read them through its methods.
type Globals struct {
	configPath string
	context    string
	server     string
	token      string
	tokenFile  string
	namespace  string
	caFile     string
	logLevel   string
	version    string
	// getenv reads SURGE_TOKEN, readFile --token-file and --ca-file.
	getenv   func(string) string
	readFile func(string) ([]byte, error)
}

// TokenEnv is the environment variable that holds an API token, for a
// machine where a file will not do; --token-file overrides it, and both
// override the client config's. A token is never a flag: every user of
// the machine reads a process's command line (ps, /proc/PID/cmdline),
// while its environment and a 0600 file are its owner's.
const TokenEnv = "SURGE_TOKEN"

// clientFunc makes an API client; tests replace it.
type clientFunc func() (*client.Client, error)

// newClient reads the client config and applies --api, --token-file, -n.
func (g *Globals) newClient() (*client.Client, error) {
	cfg, err := g.clientConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg)
}

// clientConfig reads the client config (its current context, or
// --context's) and applies --api, --token-file (or SURGE_TOKEN), -n and
// --ca-file.
func (g *Globals) clientConfig() (*client.Config, error) {
	if g.token != "" {
		return nil, usagef("--token shows the token to every user of this machine (ps): put it in a file and pass --token-file FILE, or set %s", TokenEnv)
	}
	token, err := g.flagToken()
	if err != nil {
		return nil, err
	}
	path := g.UserConfigPath()
	cfg, err := g.contextConfig(path)
	if errors.Is(err, client.ErrNoConfig) && g.server != "" {
		cfg, err = &client.Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	if g.server != "" {
		cfg.Server = g.server
	}
	if token != "" {
		cfg.Token = token
	}
	if g.namespace != "" {
		cfg.Namespace = g.namespace
	}
	if g.caFile != "" {
		b, err := g.read(g.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.CertificateAuthority = string(b)
	}
	return cfg, nil
}

// FlagToken is the token --token-file names, else SURGE_TOKEN's, else "";
// --token itself is refused, as every verb refuses it.
func (g *Globals) FlagToken() (string, error) {
	if g.token != "" {
		return "", usagef("--token shows the token to every user of this machine (ps): put it in a file and pass --token-file FILE, or set %s", TokenEnv)
	}
	return g.flagToken()
}

// flagToken is the token of --token-file, else of SURGE_TOKEN, else "".
func (g *Globals) flagToken() (string, error) {
	if g.tokenFile == "" {
		if g.getenv == nil {
			return "", nil
		}
		return strings.TrimSpace(g.getenv(TokenEnv)), nil
	}
	return ReadTokenFile("--token-file", g.tokenFile, g.read)
}

// read is readFile, or os.ReadFile.
func (g *Globals) read(path string) ([]byte, error) {
	if g.readFile == nil {
		return os.ReadFile(path)
	}
	return g.readFile(path)
}

// ReadTokenFile reads a token from path for flag: the file's first line,
// trimmed. read is os.ReadFile when nil.
func ReadTokenFile(flag, path string, read func(string) ([]byte, error)) (string, error) {
	if read == nil {
		read = os.ReadFile
	}
	b, err := read(path)
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%s %s: no such file: copy the token there (a server keeps its join and gateway tokens in its data dir), or name the file that holds it", flag, path)
	case errors.As(err, &pe):
		return "", fmt.Errorf("%s %s: %w", flag, path, pe.Err)
	case err != nil:
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("%s %s is empty: it should hold a token, as DATA_DIR/join-token does", flag, path)
	}
	return token, nil
}

// contextConfig reads the context the verbs use from the config at path,
// with errors that say what to do.
func (g *Globals) contextConfig(path string) (*client.Config, error) {
	f, err := client.LoadFile(path)
	if errors.Is(err, client.ErrNoConfig) {
		return nil, fmt.Errorf("%w at %s: start Surge with `surge up` (it writes one), or `surge login URL --token-file FILE`, or pass --api and --token-file", client.ErrNoConfig, path)
	}
	if err != nil {
		return nil, err
	}
	if g.context != "" {
		cfg, err := f.Context(g.context)
		if err != nil {
			return nil, fmt.Errorf("--context %q is not in %s: `surge config get-contexts` lists them", g.context, path)
		}
		return cfg, nil
	}
	cfg, err := f.Current()
	if errors.Is(err, client.ErrNoContext) {
		return nil, fmt.Errorf("%s names no current context that it has (%q): `surge config use-context NAME` chooses one", path, f.CurrentContext)
	}
	return cfg, err
}

// ClientConfig reads the client config and applies --api, --token-file
// (or SURGE_TOKEN), -n and --ca-file.
func (g *Globals) ClientConfig() (*client.Config, error) { return g.clientConfig() }

// LogLevel is --log-level, the log level of the server roles.
func (g *Globals) LogLevel() string { return g.logLevel }

// Version is the binary's version.
func (g *Globals) Version() string { return g.version }

// UserConfigPath is where a server writes the client config: --config, or
// the default path.
func (g *Globals) UserConfigPath() string {
	if g.configPath != "" {
		return g.configPath
	}
	return client.DefaultConfigPath()
}

// usageError marks a command-line mistake: exit code 2.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// Usagef returns a command-line mistake: Execute prints it and exits 2.
func Usagef(format string, args ...any) error { return usagef(format, args...) }

// Verb makes one more verb of the root command (the server verbs of
// cmd/surge), with the streams and the global flags.
type Verb func(s Streams, g *Globals) *cobra.Command

// deps are what the verbs take from the world besides the API and the
// streams: the clock, files, the image tools and an HTTP client. Tests
// replace them to run whole command lines.
type deps struct {
	now      func() time.Time
	getenv   func(string) string
	readFile func(string) ([]byte, error)
	build    func(context.Context, imagebuild.Options) (v1.Image, error)
	load     func(file string) (v1.Image, error)
	push     func(context.Context, v1.Image, string, imagebuild.PushOptions) (string, error)
	// http sends invoke's requests; nil is localhostClient's.
	http *http.Client
	// poll is how often the verbs that follow the server look again (a
	// rollout, a rollback's replica); 0 is each verb's own default.
	poll time.Duration
}

// realDeps are the process's.
func realDeps() deps {
	return deps{now: time.Now, getenv: os.Getenv, readFile: os.ReadFile,
		build: imagebuild.Build, load: imagebuild.LoadArchive, push: imagebuild.Push}
}

// NewRootCmd builds the `surge` command tree: the client verbs, and more
// verbs given by the caller.
func NewRootCmd(s Streams, version string, more ...Verb) *cobra.Command {
	return newRootCmd(s, version, realDeps(), more...)
}

func newRootCmd(s Streams, version string, d deps, more ...Verb) *cobra.Command {
	g := &Globals{version: version, getenv: d.getenv, readFile: d.readFile}
	root := &cobra.Command{
		Use:           "surge",
		Short:         "Surge runs HTTP functions as autoscaled container replicas",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w (see `%s --help`)", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "client config file (default $SURGE_CONFIG, else ~/.surge/config.yaml)")
	pf.StringVar(&g.context, "context", "", "the client config's context (server) to use, instead of its current one")
	pf.StringVar(&g.server, "api", "", "API server URL, overriding the config's")
	pf.StringVar(&g.tokenFile, "token-file", "", "file holding the API token, overriding $"+TokenEnv+" and the config's")
	// --token was a flag: it now says what to use instead.
	pf.StringVar(&g.token, "token", "", "never: a token on the command line shows in ps; use --token-file or $"+TokenEnv)
	_ = pf.MarkHidden("token")
	pf.StringVar(&g.caFile, "ca-file", "", "PEM of the CA that signed the API's certificate, overriding the config's")
	pf.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default: the config's, else \"default\")")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level of server roles: debug, info, warn, error")

	for _, v := range more {
		root.AddCommand(v(s, g))
	}
	root.AddCommand(
		newInitCmd(s),
		newBuildCmd(s, g.newClient, d),
		newDeployCmd(s, g.newClient, d),
		newApplyCmd(s, g.newClient, d),
		newInvokeCmd(s, g.newClient, d),
		newLsCmd(s, g.newClient, d),
		newDescribeCmd(s, g.newClient, d),
		newRevisionsCmd(s, g.newClient, d),
		newRmCmd(s, g.newClient),
		newScaleCmd(s, g.newClient, d),
		newTrafficCmd(s, g.newClient), newTagCmd(s, g.newClient), newUntagCmd(s, g.newClient),
		newRollbackCmd(s, g.newClient, d), newRolloutCmd(s, g.newClient, d),
		newNodesCmd(s, g.newClient, d),
		newCordonCmd(s, g.newClient), newUncordonCmd(s, g.newClient), newDrainCmd(s, g.newClient),
		newLogsCmd(s, g.newClient),
		newPullSecretCmd(s, g.newClient, d),
		newTokenCmd(s, g.newClient, d),
		newLoginCmd(s, g, d),
		newConfigCmd(s, g),
		newVersionCmd(s, g),
	)
	root.CompletionOptions.HiddenDefaultCmd = false
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return contextNames(g.UserConfigPath()), cobra.ShellCompDirectiveNoFileComp
	})
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	return root
}

// wrapArgs makes argument-count errors usage errors (exit 2).
func wrapArgs(c *cobra.Command) {
	if c.Args == nil {
		return
	}
	inner := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := inner(cmd, args); err != nil {
			return &usageError{fmt.Errorf("%s: %w (usage: %s)", cmd.CommandPath(), err, cmd.UseLine())}
		}
		return nil
	}
}

// Execute runs the CLI and returns the process exit code: 0, 1 for a
// failure, 2 for a usage error. Errors are one line on stderr.
func Execute(ctx context.Context, args []string, s Streams, version string, more ...Verb) int {
	return execute(ctx, args, s, version, realDeps(), more...)
}

func execute(ctx context.Context, args []string, s Streams, version string, d deps, more ...Verb) int {
	root := newRootCmd(s, version, d, more...)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(s.Err, "surge: "+oneLine(withHint(err)))
	var ue *usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		return 2
	}
	return 1
}

// withHint adds what to do to the errors any verb may meet.
func withHint(err error) error {
	if !errors.Is(err, client.ErrUnreachable) || errors.Is(err, context.Canceled) {
		return err
	}
	const what = "is Surge running? Start it with `surge up`, or check the server of your context (surge config get-contexts) or --api"
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return fmt.Errorf("cannot reach the API at %s (%v): %s", op.Addr, op.Err, what)
	}
	return fmt.Errorf("%w: %s", err, what)
}

// oneLine flattens an error's text to one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// describeAPIError turns an API error about an object into the sentence a
// user reads: the object, then the field (as its flag where there is one,
// see flagOf), then what is wrong.
func describeAPIError(kind, name string, err error) error {
	return describeAPIErrorFlags(kind, name, err, flagOf)
}

// describeAPIErrorFlags is describeAPIError for a command whose flags for
// some fields are not flagOf's: flags maps fields to them.
func describeAPIErrorFlags(kind, name string, err error, flags map[string]string) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err
	}
	obj := fmt.Sprintf("%s %q", kind, name)
	switch {
	case ae.Code == 401:
		return fmt.Errorf("%s: %s: log in again with `surge login URL --token-file FILE`, or pass --token-file FILE", obj, ae.Message)
	case ae.Code == 404 && name != "" && listVerb[kind] != "":
		return fmt.Errorf("%s not found: `%s` lists them", obj, listVerb[kind])
	case ae.Code == 403:
		return fmt.Errorf("%s: %s", obj, ae.Message)
	case len(ae.Causes) > 0:
		parts := make([]string, len(ae.Causes))
		for i, c := range ae.Causes {
			parts[i] = fieldSentence(c.Field, c.Message, flags)
		}
		return fmt.Errorf("%s: %s", obj, strings.Join(parts, "; "))
	case ae.Field != "":
		return fmt.Errorf("%s: %s", obj, fieldSentence(ae.Field, ae.Message, flags))
	}
	return fmt.Errorf("%s", ae.Message)
}

// listVerb is the verb that lists the objects of a kind, for "not found".
var listVerb = map[string]string{
	"function":    "surge ls",
	"pull secret": "surge pull-secret ls",
}

// flagOf maps object fields to the flags that set them.
var flagOf = map[string]string{
	"metadata.namespace":            "--namespace",
	"spec.image":                    "--image",
	"spec.port":                     "--port",
	"spec.concurrency":              "--concurrency",
	"spec.timeout":                  "--timeout",
	"spec.resources.cpu":            "--cpu",
	"spec.resources.memory":         "--memory",
	"spec.scaling.minScale":         "--min-scale",
	"spec.scaling.maxScale":         "--max-scale",
	"spec.scaling.metric":           "--metric",
	"spec.scaling.target":           "--target",
	"spec.scaling.scaleToZeroGrace": "--scale-to-zero-grace",
	"spec.scaling.stableWindow":     "--window",
	"spec.readiness.path":           "--readiness-path",
	"metadata.labels":               "--label",
	"spec.nodeSelector":             "--node-selector",
	"spec.canary.steps":             "--canary",
	"spec.canary.stepDuration":      "--step",
	"spec.keepRevisions":            "--keep",
}

func fieldSentence(field, msg string, flags map[string]string) string {
	if field == "metadata.name" {
		return "name " + api.NameRule
	}
	if f, ok := flags[field]; ok {
		return f + " " + msg
	}
	if strings.HasPrefix(field, "spec.env[") {
		return "--env " + msg
	}
	for prefix, flag := range map[string]string{"spec.command[": "--command", "spec.args[": "--arg", "spec.imagePullSecrets[": "--pull-secret", "metadata.labels[": "--label", "spec.nodeSelector[": "--node-selector", "spec.canary.steps[": "--canary"} {
		if strings.HasPrefix(field, prefix) {
			return flag + " " + msg
		}
	}
	return field + " " + msg
}
