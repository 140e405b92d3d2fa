package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/store"
)

// registryRoutes mounts the OCI registry at /v2/ behind the API's token
// check: GET (and HEAD) read, the other methods push.
func registryRoutes(reg http.Handler) []apiserver.Route {
	var rs []apiserver.Route
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		rs = append(rs, apiserver.Route{Pattern: m + " /v2/", Resource: auth.ResourceRegistry, Handler: reg})
	}
	return rs
}

// imageGCInterval is how often the registry drops images nothing names.
const imageGCInterval = time.Hour

// collectImages is the leader's task that runs registry GC every
// imageGCInterval: on this server, then, through POST /v1/cluster/gc, on
// every other running server, each on its own copy of the registry. One
// server decides when, so that the copies are collected together and
// never while another server's GC could race a copy between them.
func (s *Server) collectImages(p *parts) controllers.LeaderTask {
	return func(ctx context.Context) error {
		t := s.clock.NewTicker(imageGCInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.Chan():
			}
			res, err := collectImagesOnce(ctx, p.store, p.images)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("registry GC skipped", "err", err)
				}
				continue
			}
			s.log.Info("registry GC", "manifests", res.Manifests, "blobs", res.Blobs, "bytes", res.Bytes)
			s.collectPeersImages(ctx, p.peers)
		}
	}
}

// collectPeersImages asks every other running server for its GC round.
func (s *Server) collectPeersImages(ctx context.Context, ps *peers) {
	others, err := ps.list(ctx)
	if err != nil {
		s.log.Warn("registry GC of the other servers skipped", "err", err)
		return
	}
	for _, o := range others {
		resp, err := ps.do(ctx, http.MethodPost, o.APIURL+"/v1/cluster/gc", nil, nil)
		if err == nil {
			err = expect(resp, http.StatusOK, "registry GC")
		}
		if err != nil {
			s.log.Warn("registry GC on another server failed", "server", o.Name, "err", err)
		}
	}
}

// collectImagesOnce keeps the images every Function and Revision names
// (every revision, not only the serving ones: rollback needs them), by
// tag and by the digest each revision pinned. Any
// failure to list them skips the round, since GC with a partial keep set
// would delete live images.
func collectImagesOnce(ctx context.Context, st *store.Store, reg *registry.Registry) (registry.GCResult, error) {
	fns, _, err := store.List[api.Function](ctx, st, store.Scope{})
	if err != nil {
		return registry.GCResult{}, err
	}
	revs, _, err := store.List[api.Revision](ctx, st, store.Scope{})
	if err != nil {
		return registry.GCResult{}, err
	}
	refs := make([]string, 0, len(fns)+len(revs))
	for _, f := range fns {
		refs = append(refs, f.Spec.Image)
	}
	for _, r := range revs {
		// The tag, and the digest the revision runs: a tag moved since
		// must not take the revision's image with it.
		refs = append(refs, r.Spec.Template.Image, r.Spec.Image())
	}
	keep, err := registry.KeepReferences(refs)
	if err != nil {
		return registry.GCResult{}, err
	}
	return reg.GC(ctx, keep)
}

// functionURLs returns how a function's URL is made from the gateways'
// base URL: NAME.HOST in the default namespace, NAME.NAMESPACE.HOST in
// others, which is how the gateway routes hosts under its --domain.
func functionURLs(base string) (func(api.Key) string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, errors.New("want the gateways' URL, like http://surge.localhost:8080")
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return nil, errors.New("want a scheme and host[:port] only: functions are served at NAME.HOST")
	}
	scheme, host := u.Scheme, u.Host
	return func(k api.Key) string {
		if k.Namespace == "" || k.Namespace == api.DefaultNamespace {
			return scheme + "://" + k.Name + "." + host
		}
		return scheme + "://" + k.Name + "." + k.Namespace + "." + host
	}, nil
}

// imageResolver pins deploys: it returns the digest a function's image
// names now (apiserver.Config.ResolveImage). Images in the built-in
// registry are read from it directly; others are asked with a HEAD,
// authenticated with the namespace's matching pull secret.
type imageResolver struct {
	store  *store.Store
	images *registry.Registry
	own    func(host string) bool
	// followTag, when set, brings this server's copy of a tag of its own
	// registry up to what the cluster records (replicated.followTag), so
	// that a tag pushed through another server resolves as it was pushed.
	followTag func(ctx context.Context, repo, tag string) error
	timeout   time.Duration
	// transport reaches other registries; nil is the default.
	transport http.RoundTripper
}

// resolve implements apiserver.Config.ResolveImage.
func (r *imageResolver) resolve(ctx context.Context, f *api.Function) (string, error) {
	secrets, err := r.pullSecrets(ctx, f)
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(f.Spec.Image)
	if err != nil {
		return "", err // validation has refused it already
	}
	if d, ok := ref.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	host := ref.Context().RegistryStr()
	if r.own(host) {
		if r.followTag != nil {
			if err := r.followTag(ctx, ref.Context().RepositoryStr(), ref.Identifier()); err != nil {
				return "", fmt.Errorf("follow tag %s: %w", ref, err)
			}
		}
		d, err := r.images.Resolve(ref.Context().RepositoryStr(), ref.Identifier())
		if err != nil {
			return "", err
		}
		return d.String(), nil
	}
	if reservedName(ref.Context().RegistryStr()) {
		return "", fmt.Errorf("%s is a reserved name (RFC 6761): not asked", host)
	}
	var auth authn.Authenticator = authn.Anonymous
	for _, s := range secrets {
		if api.NormalizeRegistry(s.Spec.Registry) == api.NormalizeRegistry(host) {
			auth = &authn.Basic{Username: s.Spec.Username, Password: s.Spec.Password}
			break
		}
	}
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	opts := []remote.Option{remote.WithContext(rctx), remote.WithAuth(auth), remote.WithUserAgent("surge")}
	if r.transport != nil {
		opts = append(opts, remote.WithTransport(r.transport))
	}
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		return "", err
	}
	return desc.Digest.String(), nil
}

// pullSecrets returns the pull secrets f may use: the ones it names, each
// of which must exist, or else every one of its namespace.
func (r *imageResolver) pullSecrets(ctx context.Context, f *api.Function) ([]api.PullSecret, error) {
	all, _, err := store.List[api.PullSecret](ctx, r.store, store.Scope{Namespace: f.Metadata.Namespace})
	if err != nil {
		return nil, err
	}
	if len(f.Spec.ImagePullSecrets) == 0 {
		return all, nil
	}
	byName := map[string]api.PullSecret{}
	for _, s := range all {
		byName[s.Metadata.Name] = s
	}
	var out []api.PullSecret
	var errs api.FieldErrors
	for i, n := range f.Spec.ImagePullSecrets {
		s, ok := byName[n]
		if !ok {
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("spec.imagePullSecrets[%d]", i),
				Message: fmt.Sprintf("pull secret %q does not exist in namespace %q: `surge pull-secret set %s --registry HOST …` makes it", n, f.Metadata.Namespace, n)})
			continue
		}
		out = append(out, s)
	}
	if len(errs) > 0 {
		return nil, api.Invalid(api.KindFunction, f.Metadata.Name, errs)
	}
	return out, nil
}

// reservedName reports whether a registry host is under a special-use
// domain that never resolves on the Internet (RFC 6761: test, example,
// invalid): tests deploy such images, and asking for them costs a lookup.
func reservedName(host string) bool {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	for _, tld := range []string{".test", ".example", ".invalid"} {
		if strings.HasSuffix(h, tld) || h == tld[1:] {
			return true
		}
	}
	return false
}

// ownOrPeerRegistry reports whether an image's registry host is this
// server's registry or another server's of the cluster (whose images the
// replicated registry holds here too).
func (s *Server) ownOrPeerRegistry(p *peers) func(host string) bool {
	return func(host string) bool {
		if s.ownRegistry(host) {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // an etcd read
		defer cancel()
		servers, err := p.list(ctx)
		if err != nil {
			return false
		}
		for _, sv := range servers {
			if u, err := url.Parse(sv.APIURL); err == nil && strings.EqualFold(u.Host, host) {
				return true
			}
		}
		return false
	}
}

// ownRegistry reports whether an image's registry host is this server's
// registry: the API's port, and a name the API's certificate holds or an
// address of this machine.
func (s *Server) ownRegistry(host string) bool {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return false
	}
	_, apiPort, _ := net.SplitHostPort(s.addr)
	if port != apiPort {
		return false
	}
	h = strings.Trim(h, "[]")
	if slices.Contains(s.apiHosts(), h) {
		return true
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
