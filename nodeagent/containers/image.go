package containers

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/sys/user"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imageInfo is what Start needs of an image, read once by EnsureImage so
// that a cold start does no image I/O: the config (entrypoint, env, user)
// and the chain ID its unpacked snapshot is keyed by.
type imageInfo struct {
	name     string // normalized reference, the containerd image name
	config   ocispec.ImageConfig
	chainID  string
	uid, gid uint32 // the user to run as, root already replaced
}

// RegistryAuth is the credentials of one registry other than
// RegistryHost: a function's pull secret.
type RegistryAuth struct {
	// Host is the registry's host[:port] as image references name it.
	Host     string
	Username string
	Password string
}

type pullAuthKey struct{}

// WithPullAuth returns a context whose pulls (EnsureImage, and Start when
// it pulls) may use auths for the registries they name; the others are
// pulled as before. The image, once pulled, is on the node for every
// replica that names it.
func WithPullAuth(ctx context.Context, auths []RegistryAuth) context.Context {
	if len(auths) == 0 {
		return ctx
	}
	return context.WithValue(ctx, pullAuthKey{}, auths)
}

func pullAuth(ctx context.Context) []RegistryAuth {
	a, _ := ctx.Value(pullAuthKey{}).([]RegistryAuth)
	return a
}

// newResolver makes the resolver for pulls: RegistryHost and its mirrors
// (the control plane's servers, tried in turn) with the bearer token or
// the client certificate and the cluster CA, every other registry
// over HTTPS with the system roots (plain HTTP on loopback, as Docker
// does), anonymously or with the credentials auths has for its host.
func newResolver(cfg Config, auths []RegistryAuth) (remotes.Resolver, error) {
	creds := func(host string) (string, string, error) {
		for _, a := range auths {
			if normalizeHost(a.Host) == normalizeHost(host) {
				return a.Username, a.Password, nil
			}
		}
		return "", "", nil
	}
	// Public registries hand out anonymous bearer tokens on a 401
	// challenge; the authorizer fetches them, with creds' where it has
	// some.
	defaults := docker.ConfigureDefaultRegistries(
		docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(creds))),
		docker.WithPlainHTTP(docker.MatchLocalhost))
	var own *http.Client
	if cfg.RegistryHost != "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if len(cfg.RegistryCA) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(cfg.RegistryCA) {
				return nil, errors.New("containers: RegistryCA holds no PEM certificate")
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		if get := cfg.RegistryCertificate; get != nil {
			tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if c := get(); c != nil {
					return c, nil
				}
				return &tls.Certificate{}, nil
			}
			// A connection keeps the certificate it was made with, which
			// the node renews: each request dials anew with the current
			// one, for a handshake per blob of a pull.
			tr.DisableKeepAlives = true
		}
		own = &http.Client{Transport: tr}
	}
	servers := append([]string{cfg.RegistryHost}, cfg.RegistryMirrors...)
	hosts := func(host string) ([]docker.RegistryHost, error) {
		if own == nil || !slices.Contains(servers, host) {
			return defaults(host)
		}
		// The host the image names, then the control plane's other servers.
		order := append([]string{host}, slices.DeleteFunc(slices.Clone(servers), func(s string) bool { return s == host })...)
		out := make([]docker.RegistryHost, 0, len(order))
		for _, s := range order {
			h := docker.RegistryHost{
				Client:       own,
				Host:         s,
				Scheme:       "https",
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
			}
			if cfg.RegistryToken != "" {
				h.Header = http.Header{"Authorization": {"Bearer " + cfg.RegistryToken}}
			}
			out = append(out, h)
		}
		return out, nil
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts}), nil
}

// normalizeHost gives Docker Hub's several names one.
func normalizeHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// normalizeRef returns ref fully qualified, as containerd names images
// ("hello" is docker.io/library/hello:latest).
func normalizeRef(ref string) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, err)
	}
	return n.String(), nil
}

// EnsureImage makes ref ready to start replicas from: pulled (through the
// resolver, with the registry token for RegistryHost) and unpacked into
// the snapshotter. An image already in containerd is not pulled again, and
// after the first call for a ref no call reaches containerd: a tag moved in
// the registry is not noticed, so deploy immutable references (digests or
// unique tags). Concurrent calls for one ref share one pull.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	_, err := r.image(ctx, ref)
	return err
}

func (r *Runtime) image(ctx context.Context, ref string) (*imageInfo, error) {
	name, err := normalizeRef(ref)
	if err != nil {
		return nil, err
	}
	if v, ok := r.images.Load(name); ok {
		return v.(*imageInfo), nil
	}
	v, err, _ := r.pulls.Do(name, func() (any, error) {
		if v, ok := r.images.Load(name); ok {
			return v, nil
		}
		resolver := r.resolver
		if auths := pullAuth(ctx); len(auths) > 0 {
			res, err := newResolver(r.cfg, auths)
			if err != nil {
				return nil, err
			}
			resolver = res
		}
		info, err := r.ensureImage(r.nsctx(ctx), name, resolver)
		if err != nil {
			return nil, err
		}
		r.images.Store(name, info)
		return info, nil
	})
	if err != nil {
		return nil, err // the caller names the image; containerd's errors name it too
	}
	return v.(*imageInfo), nil
}

// forgetImage drops the cached info of name, so the next use checks
// containerd again (after the image or its snapshot vanished).
func (r *Runtime) forgetImage(name string) { r.images.Delete(name) }

func (r *Runtime) ensureImage(ctx context.Context, name string, resolver remotes.Resolver) (*imageInfo, error) {
	img, err := r.client.GetImage(ctx, name)
	switch {
	case errdefs.IsNotFound(err):
		img, err = r.client.Pull(ctx, name,
			client.WithResolver(resolver),
			client.WithPullUnpack,
			client.WithPullSnapshotter(r.cfg.Snapshotter))
		if err != nil {
			return nil, err // "failed to resolve reference ...", "...: not found"
		}
	case err != nil:
		return nil, err
	default:
		ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter)
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
				return nil, fmt.Errorf("unpack: %w", err)
			}
		}
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return nil, fmt.Errorf("read image layers: %w", err)
	}
	info := &imageInfo{
		name:    name,
		config:  spec.Config,
		chainID: identity.ChainID(diffIDs).String(),
	}
	uid, gid, needFS, err := resolveUser(spec.Config.User, nil, r.cfg.DefaultUID, r.cfg.DefaultGID)
	if needFS {
		err = r.withImageFS(ctx, info.chainID, func(fsys fs.FS) error {
			uid, gid, _, err = resolveUser(spec.Config.User, fsys, r.cfg.DefaultUID, r.cfg.DefaultGID)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	info.uid, info.gid = uid, gid
	return info, nil
}

// withImageFS mounts a read-only view of the unpacked image and calls f
// with it: for user and group names, which only the image's /etc/passwd
// and /etc/group resolve.
func (r *Runtime) withImageFS(ctx context.Context, chainID string, f func(fs.FS) error) error {
	ctx, done, err := r.client.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	sn := r.client.SnapshotService(r.cfg.Snapshotter)
	// A random key: a view left by an agent that died here must not
	// collide with this one.
	var b [8]byte
	rand.Read(b[:])
	key := "surge-user-lookup-" + hex.EncodeToString(b[:])
	mounts, err := sn.View(ctx, key, chainID)
	if err != nil {
		return fmt.Errorf("view image rootfs: %w", err)
	}
	defer sn.Remove(context.WithoutCancel(ctx), key)
	return mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		rt, err := os.OpenRoot(root)
		if err != nil {
			return err
		}
		defer rt.Close()
		return f(rt.FS())
	})
}

// resolveUser turns an image config's User ("", "uid", "uid:gid", "name",
// "name:group", …) into the ids a replica runs as. Without fsys it decides
// what numbers alone decide and reports needFS for names. A bare uid runs
// with gid = uid: looking up its passwd entry would cost a mount per
// image, and Docker's fallback, gid 0, would hand the replica the root
// group's files. No user, or uid 0, becomes the default non-root ids.
func resolveUser(s string, fsys fs.FS, defUID, defGID uint32) (uid, gid uint32, needFS bool, err error) {
	if s == "" {
		return defUID, defGID, false, nil
	}
	u, g, hasGroup := strings.Cut(s, ":")
	if u == "" || (hasGroup && g == "") {
		return 0, 0, false, fmt.Errorf("image user %q: want uid, uid:gid, name or name:group", s)
	}
	uNum, gNum := isNumeric(u), !hasGroup || isNumeric(g)
	if (!uNum || !gNum) && fsys == nil {
		return 0, 0, true, nil
	}
	if uNum {
		n, err := strconv.ParseUint(u, 10, 31)
		if err != nil {
			return 0, 0, false, fmt.Errorf("image user %q: uid out of range", s)
		}
		uid, gid = uint32(n), uint32(n)
	} else {
		usr, err := oci.UserFromFS(fsys, func(x user.User) bool { return x.Name == u })
		if err != nil {
			return 0, 0, false, fmt.Errorf("image user %q: look up %q in /etc/passwd: %w", s, u, err)
		}
		uid, gid = uint32(usr.Uid), uint32(usr.Gid)
	}
	switch {
	case hasGroup && gNum:
		n, err := strconv.ParseUint(g, 10, 31)
		if err != nil {
			return 0, 0, false, fmt.Errorf("image user %q: gid out of range", s)
		}
		gid = uint32(n)
	case hasGroup:
		gid, err = oci.GIDFromFS(fsys, func(x user.Group) bool { return x.Name == g })
		if err != nil {
			return 0, 0, false, fmt.Errorf("image user %q: look up group %q in /etc/group: %w", s, g, err)
		}
	}
	if uid == 0 {
		return defUID, defGID, false, nil
	}
	return uid, gid, false, nil
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
