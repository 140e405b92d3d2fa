package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/imagebuild"
)

// DeployOptions are the inputs of `surge deploy` (and of scale and apply,
// which are deploys of a few fields, or of a manifest).
type DeployOptions struct {
	Streams
	NewClient clientFunc
	// Build, Load and Push are imagebuild's; tests replace them.
	Build func(context.Context, imagebuild.Options) (v1.Image, error)
	Load  func(file string) (v1.Image, error)
	Push  func(context.Context, v1.Image, string, imagebuild.PushOptions) (string, error)
	// Getenv reads SOURCE_DATE_EPOCH for builds.
	Getenv func(string) string
	// Now times the steps; nil is the wall clock.
	Now func() time.Time
	// TTY draws a spinner on Err; false prints plain lines.
	TTY bool

	Name string
	// Dir is a Go source folder to build and push first; Archive an image
	// tarball to push first; Manifest a surge.yaml whose functions to
	// deploy.
	Dir      string
	Archive  string
	Manifest string
	Arch     string
	// Set holds the flags the user gave; only those change the spec of an
	// existing function.
	Set           map[string]bool
	Image         string
	Env           []string
	Port          int32
	Concurrency   int32
	MinScale      int32
	MaxScale      int32
	CPU           string
	Memory        string
	Timeout       api.Duration
	Target        float64
	Metric        string
	Grace         api.Duration
	Window        api.Duration
	Command       []string
	Args          []string
	ReadinessPath string
	Labels        []string
	PullSecrets   []string
	NodeSelector  []string
	// Canary is --canary: steps like "10,50,100", or "off"; Step its
	// --step; Keep is --keep, the function's keepRevisions.
	Canary string
	Step   api.Duration
	Keep   int32
	// HTTPSRedirect is --https-redirect, the function's httpsRedirect.
	HTTPSRedirect bool
	// Flags maps spec fields to the flags that set them, for errors: nil
	// for deploy's (flagOf); surge scale names its own --min and --max.
	Flags map[string]string
	// Wait is how long to wait for a new revision to have a Ready replica
	// and take the traffic; 0 returns once the revision is made.
	Wait time.Duration
	// Poll is how often the wait looks; 0 means every 250ms.
	Poll time.Duration
	// RolloutPoll is how often a canary's progress is read; 0 means every
	// 500ms.
	RolloutPoll time.Duration
}

// describeError is describeAPIError with the command's own flag names.
func (o *DeployOptions) describeError(name string, err error) error {
	flags := o.Flags
	if flags == nil {
		flags = flagOf
	}
	return describeAPIErrorFlags("function", name, err, flags)
}

func newDeployCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := newDeployOptions(s, newClient, d)
	c := &cobra.Command{
		Use:   "deploy [NAME] [DIR | --image REF | --archive FILE | -f surge.yaml] [flags]",
		Short: "Build, push and deploy a function, wait until it is Ready, and print its URL",
		Long: `Deploy makes a function from a Go source folder, an image or an image
archive, or changes one, and waits until it serves:

  surge deploy                    the functions of ./surge.yaml, else the Go
                                  package in . named after the folder
  surge deploy NAME DIR           build DIR, push it, deploy it as NAME
  surge deploy NAME --image REF   deploy an image from any registry
  surge deploy NAME --archive F   push an OCI or docker save tarball, deploy it
  surge deploy NAME --env K=V     change a function: the flags given only
  surge deploy -f surge.yaml      every function the manifest lists

Each change makes a new immutable revision NAME-0000N, pinned to the digest its
image had at deploy. All traffic moves to it once one of its replicas is Ready,
and until then stays on the revision before, so a revision that cannot start
(an image that does not pull, a crash at start-up) takes none. Deploy waits for
that (--wait-timeout), says at once when a revision crashes or no node has room
for it, and prints the function's URL. Deploying the same thing twice changes
nothing.

With --canary 10,50,100 the traffic moves step by step instead, every --step
(30s): the rollout controller, on the server, compares the new revision's error
rate and p99 latency with the old one's at each step, and rolls it back by
itself when they are worse, saying why. Deploy follows the canary to its end;
stopping deploy stops nothing (surge rollout status NAME -w follows it again).
The canary stays the function's way of rolling out until --canary off.
--keep N keeps N old revisions that nothing else keeps, and deletes the older.

The manifest (surge.yaml) lists functions under "functions:", each with a name,
one of build (a folder), image or archive, and the fields of the API's function
spec: command, args, env (a map), port, resources {cpu, memory}, concurrency,
timeout, readiness {path, period}, scaling {minScale, maxScale, metric, target,
scaleToZeroGrace, stableWindow}, imagePullSecrets, nodeSelector (a map), labels,
canary {steps, stepDuration, maxErrorRateIncrease, maxLatencyRatio,
minLatencyIncrease, minRequests}, keepRevisions, httpsRedirect (true: the
gateways redirect its plain HTTP requests to HTTPS).`,
		Example: `  surge init hi && cd hi && surge deploy
  surge deploy hello ./examples/hello
  surge deploy hello --image registry.example/hello:v1
  surge deploy hello --env GREETING=hi --concurrency 10
  surge deploy hello --env GREETING-          # remove a variable
  surge deploy hello --env GREETING=hey --canary 10,50,100 --step 30s`,
		Args:              cobra.MaximumNArgs(2),
		ValidArgsFunction: completeDeployArgs(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Set = map[string]bool{}
			setFlags(cmd, o.Set)
			if err := o.takeArgs(args); err != nil {
				return err
			}
			return runDeploy(cmd.Context(), o)
		},
	}
	addSourceFlags(c, o)
	addSpecFlags(c, o)
	addScalingFlags(c, o)
	addRolloutFlags(c, o)
	addWaitFlags(c, o)
	return c
}

// addRolloutFlags adds how a function's new revisions take the traffic,
// and how many old ones it keeps.
func addRolloutFlags(c *cobra.Command, o *DeployOptions) {
	f := c.Flags()
	f.StringVar(&o.Canary, "canary", "", "move the traffic to new revisions step by step, in percent, e.g. 10,50,100, judged at each step; off moves all at once")
	f.Var(durationFlag{&o.Step}, "step", "how long each canary step lasts before it is judged (default 30s)")
	f.Int32Var(&o.Keep, "keep", 0, "keep this many old revisions that take no traffic and have no tag, deleting older ones; 0 keeps all")
}

// setFlags records in set the command's own flags the user gave (not
// --api, --config and the other global ones).
func setFlags(cmd *cobra.Command, set map[string]bool) {
	// LocalNonPersistentFlags copies the flags, not which were set: ask
	// each flag.
	cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			set[f.Name] = true
		}
	})
}

// newDeployOptions are the options of deploy and apply, with d's image
// tools and clock, and a spinner when stderr is a terminal.
func newDeployOptions(s Streams, newClient clientFunc, d deps) *DeployOptions {
	return &DeployOptions{Streams: s, NewClient: newClient,
		Build: d.build, Load: d.load, Push: d.push,
		Getenv: d.getenv, Now: d.now, TTY: isTerminal(s.Err), RolloutPoll: d.poll}
}

// addSourceFlags adds where a deploy's image comes from.
func addSourceFlags(c *cobra.Command, o *DeployOptions) {
	f := c.Flags()
	f.StringVar(&o.Image, "image", "", "image reference, from Surge's registry or any other")
	f.StringVar(&o.Archive, "archive", "", "push the image in this OCI layout or docker save tarball, and deploy it")
	f.StringVarP(&o.Manifest, "file", "f", "", "deploy the functions this manifest lists (surge.yaml)")
	f.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the nodes, for a build")
}

// addSpecFlags adds the flags of the function spec.
func addSpecFlags(c *cobra.Command, o *DeployOptions) {
	f := c.Flags()
	f.StringArrayVarP(&o.Env, "env", "e", nil, "environment variable K=V; K- removes it (repeatable)")
	f.Int32Var(&o.Port, "port", 0, "port the function listens on, passed as $PORT (default 8080)")
	f.Int32Var(&o.Concurrency, "concurrency", 0, "requests one replica serves at once; 0 = no limit")
	f.Int32Var(&o.MinScale, "min-scale", 0, "fewest replicas, even when idle (0 allows scale to zero)")
	f.Int32Var(&o.MaxScale, "max-scale", 0, "most replicas; 0 = no limit")
	f.StringVar(&o.CPU, "cpu", "", "CPU per replica, e.g. 250m or 1 (default 100m)")
	f.StringVar(&o.Memory, "memory", "", "memory per replica, e.g. 128Mi or 1Gi (default 128Mi)")
	f.Var(durationFlag{&o.Timeout}, "timeout", "request timeout, e.g. 30s (default 5m)")
	f.StringArrayVar(&o.Command, "command", nil, "the container's command, one argument per flag, replacing the image's entrypoint; --command= alone clears it")
	f.StringArrayVar(&o.Args, "arg", nil, "an argument of the command, one per flag (repeatable); --arg= alone clears them")
	f.StringVar(&o.ReadinessPath, "readiness-path", "", "HTTP path probed for readiness, e.g. /healthz; \"\" probes with a TCP connect")
	f.StringArrayVarP(&o.Labels, "label", "l", nil, "label K=V; K- removes it (repeatable)")
	f.StringArrayVar(&o.NodeSelector, "node-selector", nil, "run only on the nodes with label K=V (repeatable); K- removes it")
	f.BoolVar(&o.HTTPSRedirect, "https-redirect", false, "gateways answer the function's plain HTTP requests with a redirect to HTTPS (--https-redirect=false to stop); makes no revision")
	f.StringArrayVar(&o.PullSecrets, "pull-secret", nil, "pull secret for a private registry (repeatable; default: every one of the namespace for the image's registry); --pull-secret= alone clears them")
}

// takeArgs reads deploy's positional arguments: [NAME] [DIR].
func (o *DeployOptions) takeArgs(args []string) error {
	// A path says so (a separator, "." or ".."), or is a folder whose
	// name cannot be a function's.
	isPath := func(s string) bool {
		if strings.ContainsRune(s, os.PathSeparator) || s == "." || s == ".." {
			return true
		}
		fi, err := os.Stat(s)
		return err == nil && fi.IsDir() && api.ValidateName(s) != nil
	}
	switch len(args) {
	case 1:
		if isPath(args[0]) && !o.Set["image"] && !o.Set["archive"] {
			o.Dir = args[0]
		} else {
			o.Name = args[0]
		}
	case 2:
		o.Name, o.Dir = args[0], args[1]
	}
	if o.Dir != "" && (o.Set["image"] || o.Set["archive"]) {
		return usagef("give a source DIR, --image or --archive, not two of them")
	}
	if o.Set["image"] && o.Set["archive"] {
		return usagef("give --image or --archive, not both")
	}
	if o.Manifest != "" && (o.Dir != "" || o.Set["image"] || o.Set["archive"]) {
		return usagef("-f %s says where the images come from: drop the DIR, --image or --archive", o.Manifest)
	}
	if o.Manifest == "" && o.Name == "" && !o.Set["image"] && !o.Set["archive"] {
		// A folder: its manifest, else its Go package named after it.
		dir := cmp.Or(o.Dir, ".")
		if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
			o.Manifest, o.Dir = filepath.Join(dir, ManifestFile), ""
			return nil
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		o.Name, o.Dir = filepath.Base(abs), dir
		if api.ValidateName(o.Name) != nil {
			return usagef("folder %q has no %s and its name is not a function name: give one, surge deploy NAME %s", dir, ManifestFile, dir)
		}
	}
	if o.Manifest == "" && o.Name == "" {
		return usagef("give the function's NAME: surge deploy NAME --image REF")
	}
	return nil
}

// addWaitFlags adds the flags of the wait for a new revision, which
// deploy, apply and scale share.
func addWaitFlags(c *cobra.Command, o *DeployOptions) {
	var noWait bool
	f := c.Flags()
	f.DurationVar(&o.Wait, "wait-timeout", 2*time.Minute, "how long to wait for the new revision to be Ready and take the traffic")
	f.BoolVar(&noWait, "no-wait", false, "return once the revision is made, without waiting for it to be Ready")
	c.PreRunE = func(*cobra.Command, []string) error {
		if o.Wait < 0 {
			return usagef("--wait-timeout %s: must not be negative", o.Wait)
		}
		if noWait {
			o.Wait = 0
		}
		return nil
	}
}

// addScalingFlags adds the autoscaling knobs deploy and scale share.
func addScalingFlags(c *cobra.Command, o *DeployOptions) {
	f := c.Flags()
	f.Float64Var(&o.Target, "target", 0, "metric value one replica should carry; 0 = 70% of --concurrency, or 100")
	f.StringVar(&o.Metric, "metric", "", "what the autoscaler targets: concurrency (default) or rps")
	f.Var(durationFlag{&o.Grace}, "scale-to-zero-grace", "keep the last replica this long after the last request, e.g. 5m; default: learned per function")
	f.Var(durationFlag{&o.Window}, "window", "autoscaler stable window, e.g. 60s: shorter follows load faster and flaps more")
}

// durationFlag is a flag that sets an api.Duration, such as "30s" or
// "2m"; "" sets zero, the field's default.
type durationFlag struct{ d *api.Duration }

var _ pflag.Value = durationFlag{}

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	if s == "" {
		f.d.Duration = 0
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New(api.DurationRule)
	}
	f.d.Duration = d
	return nil
}

func (durationFlag) Type() string { return "duration" }

// applyEnv applies K=V and K- edits to an env list, keeping its order.
func applyEnv(env []api.EnvVar, edits []string) ([]api.EnvVar, error) {
	out := slices.Clone(env)
	for _, e := range edits {
		if k, ok := strings.CutSuffix(e, "-"); ok && k != "" && !strings.Contains(e, "=") {
			out = slices.DeleteFunc(out, func(v api.EnvVar) bool { return v.Name == k })
			continue
		}
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, usagef("--env %q: want NAME=VALUE, or NAME- to remove it", e)
		}
		if i := slices.IndexFunc(out, func(ev api.EnvVar) bool { return ev.Name == k }); i >= 0 {
			out[i].Value = v
		} else {
			out = append(out, api.EnvVar{Name: k, Value: v})
		}
	}
	return out, nil
}

// applyLabels applies K=V and K- edits to labels.
func applyLabels(labels map[string]string, edits []string) (map[string]string, error) {
	return applyPairs("--label", labels, edits)
}

// applyPairs applies the K=V and K- edits of flag to a map.
func applyPairs(flag string, labels map[string]string, edits []string) (map[string]string, error) {
	if len(edits) == 0 {
		return labels, nil
	}
	out := map[string]string{}
	for k, v := range labels {
		out[k] = v
	}
	for _, e := range edits {
		if k, ok := strings.CutSuffix(e, "-"); ok && k != "" && !strings.Contains(e, "=") {
			delete(out, k)
			continue
		}
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want KEY=VALUE, or KEY- to remove it", flag, e)
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// listFlag is a repeatable flag's value, where one empty value clears the
// list.
func listFlag(values []string) []string {
	if len(values) == 1 && values[0] == "" {
		return nil
	}
	return values
}

// deployTarget is one function a deploy makes or changes.
type deployTarget struct {
	name string
	// dir or archive is the image's source, to build or load and push
	// first; both empty deploys an image reference, or none.
	dir, archive string
	// manifest, when set, is the whole spec (the image aside): nothing of
	// the stored function is kept.
	manifest *api.Function
}

func runDeploy(ctx context.Context, o *DeployOptions) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	targets, err := o.targets()
	if err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	p := newProgress(o.Err, o.Now, o.TTY)
	for _, t := range targets {
		if err := deployTo(ctx, c, o, p, t); err != nil {
			p.fail()
			return err
		}
	}
	return nil
}

// targets are the functions o deploys: the manifest's, or one.
func (o *DeployOptions) targets() ([]deployTarget, error) {
	if o.Manifest == "" {
		if err := api.ValidateName(o.Name); err != nil {
			return nil, fmt.Errorf("function %q: name %s", o.Name, api.NameRule)
		}
		return []deployTarget{{name: o.Name, dir: o.Dir, archive: o.Archive}}, nil
	}
	m, err := readManifest(o.Manifest)
	if err != nil {
		return nil, err
	}
	if o.Name != "" {
		i := slices.IndexFunc(m.Functions, func(f ManifestFunction) bool { return f.Name == o.Name })
		if i < 0 {
			return nil, usagef("%s lists no function %q", o.Manifest, o.Name)
		}
		m.Functions = m.Functions[i : i+1]
	}
	if len(m.Functions) > 1 && o.hasSpecFlags() {
		return nil, usagef("%s lists %d functions: spec flags would change them all; name one (surge deploy NAME -f %s) or edit the file", o.Manifest, len(m.Functions), o.Manifest)
	}
	var out []deployTarget
	for i, f := range m.Functions {
		out = append(out, deployTarget{name: f.Name, dir: m.resolve(f.Build), archive: m.resolve(f.Archive), manifest: m.function(i, f.Image, "")})
	}
	return out, nil
}

// hasSpecFlags reports whether a flag that edits the spec was given.
func (o *DeployOptions) hasSpecFlags() bool {
	for f := range o.Set {
		switch f {
		case "wait-timeout", "no-wait", "file", "arch", "exists":
		default:
			return true
		}
	}
	return false
}

// deployTo deploys one function: its image built or loaded and pushed
// first when it comes from a folder or a tarball, then the write, then the
// wait for its revision.
func deployTo(ctx context.Context, c *client.Client, o *DeployOptions, p *progress, t deployTarget) error {
	image := ""
	if t.dir != "" || t.archive != "" {
		var err error
		if image, err = buildAndPush(ctx, c, o, p, t); err != nil {
			return err
		}
	}
	var cur, out *api.Function
	var err error
	for attempt := 1; ; attempt++ {
		cur, out, err = deployOnce(ctx, c, o, t, image)
		if !errors.Is(err, api.ErrConflict) {
			break
		}
		if attempt == 3 {
			return fmt.Errorf("function %q changed while deploying: run the deploy again", t.name)
		}
	}
	if err != nil {
		return err
	}
	rev := out.Status.LatestRevision
	verb := "updated"
	switch {
	case cur == nil:
		verb = "created"
	case rev == cur.Status.LatestRevision:
		verb = "unchanged"
	}
	how := "all traffic"
	if cur != nil && out.Spec.Canary != nil {
		how = "the traffic step by step (" + "canary " + out.Spec.Canary.String() + ")"
	}
	switch {
	case verb == "unchanged" && cur.Spec.HTTPSRedirect != out.Spec.HTTPSRedirect:
		fmt.Fprintf(o.Out, "function %q updated, with no new revision: %s\n", t.name, redirectWords(out.Spec.HTTPSRedirect))
	case verb == "unchanged" && !reflect.DeepEqual(cur.Spec, out.Spec):
		// Only what is not part of a revision changed: the canary, --keep.
		fmt.Fprintf(o.Out, "function %q updated, with no new revision: the next deploys roll out %s\n", t.name, rolloutWords(out))
	case out.Status.LatestReadyRevision == rev && verb == "unchanged":
		fmt.Fprintf(o.Out, "function %q unchanged: revision %s\n", t.name, rev)
	case o.Wait == 0 && out.Status.LatestReadyRevision == rev:
		fmt.Fprintf(o.Out, "function %q %s: revision %s takes %s\n", t.name, verb, rev, how)
	case o.Wait == 0:
		fmt.Fprintf(o.Out, "function %q %s: revision %s takes %s once a replica is Ready\n", t.name, verb, rev, how)
	default:
		// An unchanged deploy of a revision still rolling out waits too: a
		// retried deploy must not succeed where the first one failed.
		if out.Status.LatestReadyRevision != rev {
			if err := waitRollout(ctx, c, o, p, t.name, rev); err != nil {
				return err
			}
		}
		if err := followCanary(ctx, c, o, t.name, rev); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "function %q %s: revision %s takes all traffic\n", t.name, verb, rev)
	}
	if out.Status.URL != "" {
		fmt.Fprintln(o.Out, out.Status.URL)
	}
	return nil
}

// buildAndPush builds t's folder or loads its tarball, pushes the image to
// Surge's registry as NAMESPACE/NAME:latest and returns its reference
// pinned to its digest, so that the same source deploys as unchanged and
// other source as a new revision.
func buildAndPush(ctx context.Context, c *client.Client, o *DeployOptions, p *progress, t deployTarget) (string, error) {
	u, err := url.Parse(c.Server())
	if err != nil {
		return "", err
	}
	ref, err := imageRef(u.Host, c.Namespace(), t.name+":latest")
	if err != nil {
		return "", err
	}
	var img v1.Image
	if t.archive != "" {
		p.start("loading %s", t.archive)
		if img, err = o.Load(t.archive); err != nil {
			return "", err
		}
		p.end("loaded " + t.archive)
	} else {
		bo := imagebuild.DefaultOptions(t.dir)
		bo.Arch = cmp.Or(o.Arch, runtime.GOARCH)
		var compiler strings.Builder
		bo.Output = &compiler
		if o.Getenv != nil {
			if bo.Created, err = imagebuild.SourceDateEpoch(o.Getenv); err != nil {
				return "", usagef("%v", err)
			}
		}
		p.start("building %s for linux/%s", t.dir, bo.Arch)
		if img, err = o.Build(ctx, bo); err != nil {
			return "", buildError(o.Err, p, t.dir, compiler.String(), err)
		}
		p.end(fmt.Sprintf("built %s for linux/%s", t.dir, bo.Arch))
	}
	p.start("pushing %s", ref)
	pushed, err := o.Push(ctx, img, ref, imagebuild.PushOptions{Token: c.Token(), Transport: c.Transport()})
	if err != nil {
		return "", pushError(t.name, err)
	}
	// The tag for people, the digest for the revision.
	_, digest, _ := strings.Cut(pushed, "@")
	p.end(fmt.Sprintf("pushed %s (%s)", ref, shortDigest(digest)))
	return ref + "@" + digest, nil
}

// buildError prints the compiler's lines, which are the message, and
// returns the one line that says what to do.
func buildError(w io.Writer, p *progress, dir, compiler string, err error) error {
	p.fail()
	compiler = strings.TrimSpace(compiler)
	if compiler == "" {
		return err
	}
	fmt.Fprintln(w, compiler)
	return fmt.Errorf("build %s failed: fix the errors above and deploy again", dir)
}

// pushError says what to do about a push that failed.
func pushError(name string, err error) error {
	var tl *imagebuild.TooLargeError
	if errors.As(err, &tl) {
		return fmt.Errorf("function %q: image too large: %s; make it smaller (fewer or smaller files in its layers)", name, tl.Message)
	}
	return err
}

// shortDigest is "sha256:" and 12 hex digits, as people compare digests.
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// deployOnce reads the function, makes its spec (the manifest's, or the
// stored one with o's flags applied), and writes it back, conditional on
// what it read. It returns the function as read (nil when new) and as
// written.
func deployOnce(ctx context.Context, c *client.Client, o *DeployOptions, t deployTarget, image string) (cur, out *api.Function, err error) {
	name := t.name
	fn := &api.Function{Metadata: api.ObjectMeta{Name: name, Namespace: c.Namespace()}}
	cur, err = client.Get[api.Function](ctx, c, api.Key{Namespace: c.Namespace(), Name: name})
	switch {
	case err == nil:
		fn.Spec = cur.Spec
		fn.Metadata.Labels = cur.Metadata.Labels
		fn.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
	case errors.Is(err, api.ErrNotFound):
		cur = nil
		if o.Set["exists"] {
			return nil, nil, fmt.Errorf("function %q not found: `surge ls` lists them", name)
		}
		if !o.Set["image"] && image == "" && t.manifest == nil {
			return nil, nil, usagef("function %q does not exist yet: give its image with --image REF, or a folder to build: surge deploy %s DIR", name, name)
		}
	default:
		return nil, nil, o.describeError(name, err)
	}
	if t.manifest != nil {
		fn.Spec = t.manifest.Spec
		fn.Metadata.Labels = t.manifest.Metadata.Labels
	}
	if err := o.applyFlags(fn); err != nil {
		return nil, nil, err
	}
	if image != "" {
		fn.Spec.Image = image
	}
	// Check here first, with the server's own rules, so that a typo costs
	// no round trip; the server checks again.
	api.SetDefaults(&fn.Spec)
	if err := api.ValidateFunction(fn); err != nil {
		var fe api.FieldErrors
		errors.As(err, &fe)
		return nil, nil, o.describeError(name, api.Invalid(api.KindFunction, name, fe))
	}
	if err := checkFits(ctx, c, name, &fn.Spec); err != nil {
		return nil, nil, err
	}
	out, err = c.PutFunction(ctx, fn)
	if errors.Is(err, api.ErrConflict) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, o.describeError(name, err)
	}
	return cur, out, nil
}

// applyFlags applies the flags the user gave to fn's spec and labels.
func (o *DeployOptions) applyFlags(fn *api.Function) error {
	s := &fn.Spec
	var err error
	if o.Set["image"] {
		s.Image = o.Image
	}
	if s.Env, err = applyEnv(s.Env, o.Env); err != nil {
		return err
	}
	if fn.Metadata.Labels, err = applyLabels(fn.Metadata.Labels, o.Labels); err != nil {
		return err
	}
	if s.NodeSelector, err = applyPairs("--node-selector", s.NodeSelector, o.NodeSelector); err != nil {
		return err
	}
	setIf(o.Set["port"], &s.Port, o.Port)
	setIf(o.Set["concurrency"], &s.Concurrency, o.Concurrency)
	setIf(o.Set["min-scale"], &s.Scaling.MinScale, o.MinScale)
	setIf(o.Set["max-scale"], &s.Scaling.MaxScale, o.MaxScale)
	setIf(o.Set["cpu"], &s.Resources.CPU, o.CPU)
	setIf(o.Set["memory"], &s.Resources.Memory, o.Memory)
	setIf(o.Set["timeout"], &s.Timeout, o.Timeout)
	setIf(o.Set["target"], &s.Scaling.Target, o.Target)
	setIf(o.Set["metric"], &s.Scaling.Metric, o.Metric)
	setIf(o.Set["scale-to-zero-grace"], &s.Scaling.ScaleToZeroGrace, o.Grace)
	setIf(o.Set["window"], &s.Scaling.StableWindow, o.Window)
	setIf(o.Set["command"], &s.Command, listFlag(o.Command))
	setIf(o.Set["arg"], &s.Args, listFlag(o.Args))
	setIf(o.Set["pull-secret"], &s.ImagePullSecrets, listFlag(o.PullSecrets))
	setIf(o.Set["keep"], &s.KeepRevisions, o.Keep)
	setIf(o.Set["https-redirect"], &s.HTTPSRedirect, o.HTTPSRedirect)
	if err := o.applyCanary(s); err != nil {
		return err
	}
	if o.Set["readiness-path"] {
		switch {
		case o.ReadinessPath == "" && s.Readiness != nil && s.Readiness.Period.Duration == 0:
			s.Readiness = nil
		case s.Readiness == nil:
			s.Readiness = &api.Probe{Path: o.ReadinessPath}
		default:
			r := *s.Readiness
			r.Path = o.ReadinessPath
			s.Readiness = &r
		}
	}
	return nil
}

// applyCanary applies --canary and --step to a spec.
func (o *DeployOptions) applyCanary(s *api.FunctionSpec) error {
	if o.Set["canary"] {
		switch o.Canary {
		case "off", "none":
			s.Canary = nil
		default:
			var steps []int32
			for _, p := range strings.Split(o.Canary, ",") {
				n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(p), "%"), 10, 32)
				if err != nil {
					return usagef("--canary %q: want the percentages of the steps, e.g. 10,50,100, or off", o.Canary)
				}
				steps = append(steps, int32(n))
			}
			c := api.CanaryStrategy{}
			if s.Canary != nil {
				c = *s.Canary
			}
			c.Steps = steps
			s.Canary = &c
		}
	}
	if o.Set["step"] {
		if s.Canary == nil {
			return usagef("--step is how long a canary's step lasts: give --canary STEPS too")
		}
		c := *s.Canary
		c.StepDuration = o.Step
		s.Canary = &c
	}
	return nil
}

// checkFits refuses at once a spec no node could ever run: more cpu or
// memory per replica than any node has allocatable. Without nodes, or
// without the right to read them, it checks nothing.
func checkFits(ctx context.Context, c *client.Client, name string, s *api.FunctionSpec) error {
	nodes, err := client.List[api.Node](ctx, c, "", nil)
	if err != nil || len(nodes.Items) == 0 {
		return nil
	}
	cpu, err1 := api.ParseCPU(s.Resources.CPU)
	mem, err2 := api.ParseMemory(s.Resources.Memory)
	if err1 != nil || err2 != nil {
		return nil
	}
	var maxCPU, maxMem int64
	matched := 0
	for _, n := range nodes.Items {
		if !selects(s.NodeSelector, n.Metadata.Labels) {
			continue // the scheduler says so, if no node matches
		}
		matched++
		nc, err1 := api.ParseCPU(n.Status.Allocatable.CPU)
		nm, err2 := api.ParseMemory(n.Status.Allocatable.Memory)
		if err1 != nil || err2 != nil {
			return nil // a node that does not say: it may fit
		}
		if nc >= cpu && nm >= mem {
			return nil
		}
		maxCPU, maxMem = max(maxCPU, nc), max(maxMem, nm)
	}
	if matched == 0 {
		return nil
	}
	if cpu > maxCPU {
		return fmt.Errorf("function %q: no node fits --cpu %s (the most any node has is %s): ask for less cpu, or add a bigger node",
			name, s.Resources.CPU, api.FormatCPU(maxCPU))
	}
	return fmt.Errorf("function %q: no node fits --memory %s (the most any node has is %s): ask for less memory, or add a bigger node",
		name, s.Resources.Memory, api.FormatMemory(maxMem))
}

// selects reports whether labels hold every pair of a node selector.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// crashTail is how many of a crashing replica's last log lines deploy and
// describe show.
const crashTail = 10

// waitRollout waits until rev is the function's latest ready revision (a
// replica of it is Ready and the traffic moved to it), for at most o.Wait.
// What the replicas of rev report on the way (a pull that fails) goes to
// the progress, each message once. It fails at once, without waiting out
// o.Wait, when a replica of rev crashes (printing its last log lines) or
// when no node has room for one. An error of the API is retried until
// then, unless it is final (the function gone, the token refused).
func waitRollout(ctx context.Context, c *client.Client, o *DeployOptions, p *progress, name, rev string) error {
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	p.start("waiting for %s to be Ready", rev)
	var last string // the latest message of a replica of rev, or of the API
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		fn, err := client.Get[api.Function](wctx, c, api.Key{Namespace: c.Namespace(), Name: name})
		switch {
		case err == nil && fn.Status.LatestReadyRevision == rev:
			p.end(rev + " is Ready")
			return nil
		case err == nil && fn.Status.LatestRevision != rev:
			return fmt.Errorf("function %q: revision %s was deployed while waiting for %s", name, fn.Status.LatestRevision, rev)
		case errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden):
			return o.describeError(name, err)
		case err != nil && wctx.Err() == nil:
			last = "the API: " + err.Error()
		}
		reps, err := client.List[api.Replica](wctx, c, c.Namespace(), url.Values{"function": {name}})
		if err == nil {
			for _, r := range reps.Items {
				if r.Spec.Revision != rev || r.Status.Message == "" {
					continue
				}
				last = fmt.Sprintf("replica %s: %s", r.Metadata.Name, r.Status.Message)
				p.note("%s", last)
				if err := failFast(ctx, c, o, p, name, rev, &r); err != nil {
					return err
				}
			}
		}
		select {
		case <-tick.C:
			continue
		case <-wctx.Done():
		}
		p.fail()
		why := ""
		if last != "" {
			why = " (" + last + ")"
		}
		stays := trafficAfter(ctx, c, name, rev)
		if ctx.Err() != nil {
			return fmt.Errorf("function %q: stopped waiting for revision %s, which has no Ready replica yet%s; %s", name, rev, why, stays)
		}
		return fmt.Errorf("function %q: revision %s has no Ready replica after %s%s; %s (surge describe %s shows more)", name, rev, o.Wait, why, stays, name)
	}
}

// rolloutWords says how a function's next revisions take the traffic,
// and how many old ones it keeps.
func rolloutWords(fn *api.Function) string {
	s := "all at once"
	if c := fn.Spec.Canary; c != nil {
		s = "by canary " + c.String()
	}
	if k := fn.Spec.KeepRevisions; k > 0 {
		s += fmt.Sprintf(", keeping %d old revisions", k)
	}
	return s
}

// followCanary follows the canary that moves function name's traffic to
// rev, when there is one, to its end: nil once rev has all the traffic,
// an error saying why when it was rolled back. A deploy without a canary
// has moved all the traffic already: there is nothing to follow.
func followCanary(ctx context.Context, c *client.Client, o *DeployOptions, name, rev string) error {
	ro, err := client.Get[api.Rollout](ctx, c, api.Key{Namespace: c.Namespace(), Name: name})
	if errors.Is(err, api.ErrNotFound) {
		return nil
	}
	if err != nil {
		return o.describeError(name, err)
	}
	if ro.Spec.Revision != rev || ro.Spec.Canary == nil {
		return nil
	}
	fmt.Fprintf(o.Err, "canary %s from %s, judged by the server (surge rollout status %s -w follows it):\n", ro.Spec.Canary, ro.Spec.From, name)
	_, err = followRollout(ctx, c, o.Err, name, ro, o.RolloutPoll, o.Now)
	return err
}

// failFast returns the error that ends a wait at once for what replica r
// of rev reports: it crashed (its last log lines are printed first), or no
// node has room for it. Other messages (a pull in progress or failing, a
// slow start) are waited out.
func failFast(ctx context.Context, c *client.Client, o *DeployOptions, p *progress, name, rev string, r *api.Replica) error {
	msg := r.Status.Message
	switch {
	case r.Spec.NodeName == "" && strings.HasPrefix(msg, "no node fits"):
		p.fail()
		return fmt.Errorf("function %q: no node has room for a replica of %s (%s): ask for less --cpu or --memory, or add a node; %s",
			name, rev, msg, trafficAfter(ctx, c, name, rev))
	case crashed(r):
		p.fail()
		// The shim writes a crash's last words to the log a moment after
		// the exit is reported: look again for a little while (the next
		// attempt appends its own) before saying there are none.
		lines, err := logTail(ctx, c, r, crashTail)
		for try := 0; err == nil && len(lines) == 0 && try < 10 && ctx.Err() == nil; try++ {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			lines, err = logTail(ctx, c, r, crashTail)
		}
		seeLogs := "its last log lines are above"
		switch {
		case err != nil:
			seeLogs = "surge logs " + name + " --replica " + r.Metadata.Name + " shows its log"
		case len(lines) == 0:
			seeLogs = "it logged nothing"
		default:
			fmt.Fprintf(o.Err, "last log lines of %s:\n", r.Metadata.Name)
			printIndented(o.Err, lines)
		}
		return fmt.Errorf("function %q: revision %s crashes: replica %s %s (%s); fix it and deploy again; %s",
			name, rev, r.Metadata.Name, strings.TrimPrefix(msg, "restart: "), seeLogs, trafficAfter(ctx, c, name, rev))
	}
	return nil
}

// crashed reports whether a replica's container exited: at start-up,
// before it was ready, or since.
func crashed(r *api.Replica) bool {
	m := r.Status.Message
	return r.Status.Phase != api.ReplicaReady && (strings.Contains(m, "exited with code") || strings.Contains(m, "exited before it was ready"))
}

// trafficAfter says where fn's traffic is while rev rolls out, read
// afresh: ctx may be done.
func trafficAfter(ctx context.Context, c *client.Client, fn, rev string) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return trafficNow(rctx, c, fn, rev)
}

// trafficNow says where fn's traffic is while rev rolls out.
func trafficNow(ctx context.Context, c *client.Client, fn, rev string) string {
	tr, err := client.Get[api.Traffic](ctx, c, api.Key{Namespace: c.Namespace(), Name: fn})
	if err != nil {
		return "the traffic stays where it was"
	}
	var on []string
	for _, t := range tr.Spec.Targets {
		switch {
		case t.Percent <= 0:
		case t.Revision == rev && t.Percent == 100:
			return "requests to it wait for a Ready replica"
		case t.Percent == 100:
			on = append(on, t.Revision)
		default:
			on = append(on, fmt.Sprintf("%s (%d%%)", t.Revision, t.Percent))
		}
	}
	if len(on) == 0 {
		return "the function has no traffic"
	}
	return "the traffic stays on " + strings.Join(on, ", ")
}

func setIf[T any](set bool, dst *T, v T) {
	if set {
		*dst = v
	}
}

// itoa writes an int32 for a table cell.
func itoa(v int32) string { return strconv.FormatInt(int64(v), 10) }

// redirectWords says what the gateways do with a function's plain HTTP
// requests.
func redirectWords(redirect bool) string {
	if redirect {
		return "the gateways redirect its plain HTTP requests to HTTPS"
	}
	return "the gateways serve its plain HTTP requests again"
}
