package cli

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/imagebuild"
)

// BuildOptions are the inputs of `surge build`.
type BuildOptions struct {
	Streams
	NewClient clientFunc
	// Build, Load and Push are imagebuild's; tests may replace them.
	Build func(context.Context, imagebuild.Options) (v1.Image, error)
	Load  func(file string) (v1.Image, error)
	Push  func(context.Context, v1.Image, string, imagebuild.PushOptions) (string, error)
	// Getenv reads SOURCE_DATE_EPOCH.
	Getenv func(string) string

	Dir     string
	Tag     string
	Archive string
	Arch    string
}

func newBuildCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &BuildOptions{Streams: s, NewClient: newClient, Build: d.build, Load: d.load, Push: d.push, Getenv: d.getenv}
	c := &cobra.Command{
		Use:   "build [DIR] -t NAME[:TAG] [--archive FILE.tar]",
		Short: "Build a Go function into an image and push it to Surge's registry",
		Long: `Build compiles the Go main package in DIR (default ".") into a static linux
binary and packs it into a minimal image: the binary, CA certificates, no shell,
running as uid 65532. The same source gives the same image digest. With
--archive it pushes an image from a docker save or OCI layout tarball instead.

The image goes to the control plane's registry as NAME:TAG (NAME without a "/"
goes under your namespace); the reference with its digest is printed, ready
for surge deploy --image.`,
		Example: `  surge build ./examples/hello -t hello:v1
  surge deploy hello --image "$(surge build ./examples/hello -t hello:v1)"
  surge build --archive app.tar -t app:v2`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Dir = args[0]
			}
			return runBuild(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.Tag, "tag", "t", "", "image name and tag, NAME[:TAG] (required; TAG defaults to latest)")
	f.StringVar(&o.Archive, "archive", "", "push the image in this docker save or OCI layout tarball instead of building")
	f.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the nodes that will run the image")
	return c
}

func runBuild(ctx context.Context, o *BuildOptions) error {
	if o.Tag == "" {
		return usagef("--tag is required: surge build DIR -t NAME:TAG")
	}
	if o.Dir != "" && o.Archive != "" {
		return usagef("give a source DIR or --archive FILE, not both")
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	u, err := url.Parse(c.Server())
	if err != nil {
		return err
	}
	ref, err := imageRef(u.Host, c.Namespace(), o.Tag)
	if err != nil {
		return err
	}

	var img v1.Image
	if o.Archive != "" {
		fmt.Fprintf(o.Err, "loading %s\n", o.Archive)
		img, err = o.Load(o.Archive)
	} else {
		bo := imagebuild.DefaultOptions(cmp.Or(o.Dir, "."))
		bo.Arch = o.Arch
		bo.Output = o.Err
		if bo.Created, err = imagebuild.SourceDateEpoch(o.Getenv); err != nil {
			return usagef("%v", err)
		}
		fmt.Fprintf(o.Err, "building %s for linux/%s\n", bo.Dir, bo.Arch)
		img, err = o.Build(ctx, bo)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Err, "pushing %s\n", ref)
	out, err := o.Push(ctx, img, ref, imagebuild.PushOptions{Token: c.Token(), Transport: c.Transport()})
	if err != nil {
		return err
	}
	fmt.Fprintln(o.Out, out)
	return nil
}

// imageRef turns --tag into a reference in the Surge registry at host:
// NAME without a "/" goes under the namespace, a missing tag is "latest",
// and a NAME that names another registry is refused, since the API token
// must not be sent there.
func imageRef(host, namespace, tag string) (string, error) {
	repo, t := tag, "latest"
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		repo, t = tag[:i], tag[i+1:]
	}
	if first, _, ok := strings.Cut(repo, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if first != host {
			return "", usagef("--tag %q names the registry %s; surge build pushes to Surge's registry at %s: drop the host", tag, first, host)
		}
		repo = strings.TrimPrefix(repo, first+"/")
	}
	if !strings.Contains(repo, "/") {
		repo = namespace + "/" + repo
	}
	ref := host + "/" + repo + ":" + t
	if _, err := name.NewTag(ref, name.StrictValidation); err != nil {
		return "", usagef("--tag %q: %v", tag, err)
	}
	return ref, nil
}
