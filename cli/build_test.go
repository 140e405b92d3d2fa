package cli

import (
	"context"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/registry/registrytest"
	"github.com/surgeplatform/surge/imagebuild"
)

func TestBuild(t *testing.T) {
	reg := registrytest.NewServer(t, registrytest.Options{Token: fakeToken})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Certificate().Raw})
	newClient := func() (*client.Client, error) {
		return client.New(&client.Config{Server: reg.URL, CertificateAuthority: string(caPEM), Token: fakeToken})
	}
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	var built []imagebuild.Options
	fakeBuild := func(_ context.Context, o imagebuild.Options) (v1.Image, error) {
		built = append(built, o)
		return img, nil
	}
	fakeLoad := func(string) (v1.Image, error) { return img, nil }

	tests := []struct {
		name    string
		o       BuildOptions
		wantOut string
		wantErr string
	}{
		{name: "dir", o: BuildOptions{Dir: "./fn", Tag: "hello:v1", Arch: "arm64"},
			wantOut: reg.Host + "/default/hello@" + want.String() + "\n"},
		{name: "archive", o: BuildOptions{Archive: "app.tar", Tag: "team/app"},
			wantOut: reg.Host + "/team/app@" + want.String() + "\n"},
		{name: "own host", o: BuildOptions{Tag: reg.Host + "/x/y:v2"},
			wantOut: reg.Host + "/x/y@" + want.String() + "\n"},
		{name: "no tag", o: BuildOptions{Dir: "."}, wantErr: "--tag is required"},
		{name: "both", o: BuildOptions{Dir: ".", Archive: "a.tar", Tag: "a:b"}, wantErr: "not both"},
		{name: "other registry", o: BuildOptions{Tag: "docker.io/me/app:v1"}, wantErr: "names the registry docker.io"},
		{name: "bad tag", o: BuildOptions{Tag: "Hello:v1"}, wantErr: `--tag "Hello:v1"`},
		{name: "bad epoch", o: BuildOptions{Tag: "a:b"}, wantErr: "SOURCE_DATE_EPOCH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, out, _ := testStreams()
			o := tt.o
			o.Streams, o.NewClient, o.Build, o.Load, o.Push = s, newClient, fakeBuild, fakeLoad, imagebuild.Push
			o.Getenv = func(string) string { return "" }
			if tt.name == "bad epoch" {
				o.Getenv = func(string) string { return "soon" }
			}
			err := runBuild(t.Context(), &o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out.String(), tt.wantOut)
			}
			r, _ := name.ParseReference(strings.TrimSpace(out.String()))
			if _, err := remote.Image(r, remote.WithAuth(&authn.Bearer{Token: fakeToken}), remote.WithTransport(reg.Client().Transport)); err != nil {
				t.Errorf("pull what was pushed: %v", err)
			}
		})
	}
	if b := built[0]; b.Dir != "./fn" || b.Arch != "arm64" || b.CACerts != imagebuild.DefaultCACerts {
		t.Errorf("build options %+v", b)
	}
}
