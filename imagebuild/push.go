package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// PushOptions say how to reach the registry.
type PushOptions struct {
	// Token is sent as "Authorization: Bearer TOKEN" with every request,
	// which is what the control plane's registry wants. Empty means none.
	Token string
	// Transport carries the requests; give it a TLS config that trusts the
	// control plane's CA. Nil means http.DefaultTransport.
	Transport http.RoundTripper
}

// TooLargeError is a push the registry refused because the image, or one
// of its layers, is larger than it takes.
type TooLargeError struct {
	// Message is the registry's, e.g. "blob is larger than the registry's
	// limit of 4294967296 bytes".
	Message string
}

// Error says the image is too large, in the registry's words.
func (e *TooLargeError) Error() string { return "image too large: " + e.Message }

// Push uploads img to ref ("HOST[:PORT]/REPO:TAG"), skipping the blobs the
// registry has already, and returns the image's reference by digest,
// "HOST[:PORT]/REPO@sha256:…", which is what a function should name to
// run exactly this image.
func Push(ctx context.Context, img v1.Image, ref string, o PushOptions) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("push: image reference %q: %w", ref, err)
	}
	var auth authn.Authenticator = authn.Anonymous
	if o.Token != "" {
		auth = &authn.Bearer{Token: o.Token}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithUserAgent("surge")}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	if err := remote.Write(r, img, opts...); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusRequestEntityTooLarge {
			msg := "the registry refused a layer as too large"
			if len(te.Errors) > 0 && te.Errors[0].Message != "" {
				msg = te.Errors[0].Message
			}
			return "", fmt.Errorf("push %s: %w", ref, &TooLargeError{Message: msg})
		}
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return r.Context().Digest(d.String()).String(), nil
}
