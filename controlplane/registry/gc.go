package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Image is one manifest of one repository, as GC offers it to keep.
type Image struct {
	// Repository is the repository's name, e.g. "default/hello".
	Repository string
	// Digest is the manifest's.
	Digest v1.Hash
	// Tags are the repository's tags that point at it, sorted.
	Tags []string
}

// GCResult counts what GC deleted.
type GCResult struct {
	Manifests, Tags, Blobs, Uploads int
	// Bytes is the size of the deleted blobs.
	Bytes int64
}

// GC deletes every manifest that keep rejects, with its tags, then every
// blob that no kept manifest references, then abandoned uploads. It is
// mark and sweep: kept manifests are followed (an index to its manifests,
// a manifest to its config and layers) and what was not reached goes.
//
// Anything younger than Config.GCGrace is kept whatever keep says: a
// manifest linked or tagged, a blob uploaded or found present by a client
// (HEAD, mount), an upload written to. That covers pushes in flight and
// images pushed but not deployed yet.
//
// keep is called once per manifest, from GC's goroutine, while pushes are
// held off; it must be quick and must not call the Registry. Reads go on
// during GC; one that races a deletion gets a 404.
//
// Sharing is by digest: a manifest kept in one repository also keeps the
// same manifest in every other repository.
func (r *Registry) GC(ctx context.Context, keep func(Image) bool) (GCResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res GCResult
	cutoff := r.cfg.Clock.Now().Add(-r.cfg.GCGrace)
	young := func(t time.Time) bool { return t.After(cutoff) }

	repos, err := r.repositories()
	if err != nil {
		return res, fmt.Errorf("registry gc: %w", err)
	}
	states := make([]repoState, 0, len(repos))
	marked := map[v1.Hash]bool{}
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		st, err := r.readRepo(repo)
		if err != nil {
			return res, fmt.Errorf("registry gc: %w", err)
		}
		states = append(states, st)
		for _, d := range st.order {
			img := Image{Repository: repo, Digest: d}
			fresh := young(st.manifests[d])
			for _, t := range st.tagOrder {
				if st.tags[t].digest == d {
					img.Tags = append(img.Tags, t)
					fresh = fresh || young(st.tags[t].mtime)
				}
			}
			if fresh || keep(img) {
				r.mark(d, marked)
			}
		}
	}

	for _, st := range states {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		for _, t := range st.tagOrder {
			if d := st.tags[t].digest; !marked[d] || st.manifests[d].IsZero() {
				if err := os.Remove(r.tagPath(st.repo, t)); err != nil {
					return res, fmt.Errorf("registry gc: %w", err)
				}
				res.Tags++
			}
		}
		left := 0
		for _, d := range st.order {
			if marked[d] {
				left++
				continue
			}
			if err := os.Remove(r.manifestLink(st.repo, d)); err != nil {
				return res, fmt.Errorf("registry gc: %w", err)
			}
			res.Manifests++
		}
		if left == 0 {
			r.removeRepo(st.repo)
		}
	}

	// Blobs, then files abandoned in uploads/ and tmp/.
	err = filepath.WalkDir(filepath.Join(r.cfg.Dir, "blobs", "sha256"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if d, ok := parseDigest("sha256:" + e.Name()); (ok && marked[d]) || young(fi.ModTime()) {
			return nil
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		res.Blobs++
		res.Bytes += fi.Size()
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("registry gc: %w", err)
	}
	for _, dir := range []string{"uploads", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(r.cfg.Dir, dir))
		if err != nil {
			return res, fmt.Errorf("registry gc: %w", err)
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && !young(fi.ModTime()) {
				if os.Remove(filepath.Join(r.cfg.Dir, dir, e.Name())) == nil && dir == "uploads" {
					res.Uploads++
				}
			}
		}
	}
	return res, nil
}

// mark marks a manifest and, through it, everything it references. A
// manifest that is missing or unreadable keeps only itself.
func (r *Registry) mark(d v1.Hash, marked map[v1.Hash]bool) {
	if marked[d] {
		return
	}
	marked[d] = true
	b, err := os.ReadFile(r.blobPath(d))
	if err != nil {
		return
	}
	m, err := parseManifest(b, "")
	if err != nil {
		r.cfg.Log.Warn("registry gc: unreadable manifest keeps only itself", "digest", d, "err", err)
		return
	}
	for _, b := range m.blobs {
		marked[b] = true
	}
	for _, c := range m.children {
		r.mark(c, marked)
	}
}

type tagState struct {
	digest v1.Hash
	mtime  time.Time
}

// repoState is a repository's manifests and tags, as GC found them.
type repoState struct {
	repo      string
	manifests map[v1.Hash]time.Time // link modification times
	order     []v1.Hash             // manifests, sorted
	tags      map[string]tagState
	tagOrder  []string
}

func (r *Registry) readRepo(repo string) (repoState, error) {
	st := repoState{repo: repo, manifests: map[v1.Hash]time.Time{}, tags: map[string]tagState{}}
	ents, err := os.ReadDir(filepath.Join(r.repoDir(repo), "_manifests", "sha256"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	for _, e := range ents {
		d, ok := parseDigest("sha256:" + e.Name())
		fi, err := e.Info()
		if !ok || err != nil {
			continue
		}
		st.manifests[d] = fi.ModTime()
		st.order = append(st.order, d)
	}
	st.tagOrder, err = r.tags(repo)
	if err != nil {
		return st, err
	}
	for _, t := range st.tagOrder {
		p := r.tagPath(repo, t)
		b, err := os.ReadFile(p)
		fi, serr := os.Stat(p)
		if err != nil || serr != nil {
			return st, errors.Join(err, serr)
		}
		d, _ := parseDigest(string(b)) // a bad tag points at nothing and goes
		st.tags[t] = tagState{digest: d, mtime: fi.ModTime()}
	}
	return st, nil
}

// repositories lists every repository with a manifest or tag directory.
func (r *Registry) repositories() ([]string, error) {
	root := filepath.Join(r.cfg.Dir, "repositories")
	var repos []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return err
		}
		if n := e.Name(); n == "_manifests" || n == "_tags" {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			repos = append(repos, filepath.ToSlash(rel))
			return fs.SkipDir
		}
		return nil
	})
	slices.Sort(repos)
	return slices.Compact(repos), err
}

// removeRepo deletes an emptied repository and the parent directories it
// leaves empty; nested repositories keep their parents.
func (r *Registry) removeRepo(repo string) {
	dir := r.repoDir(repo)
	_ = os.RemoveAll(filepath.Join(dir, "_manifests"))
	_ = os.RemoveAll(filepath.Join(dir, "_tags"))
	root := filepath.Join(r.cfg.Dir, "repositories")
	for ; dir != root && strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return
		}
	}
}

// KeepReferences returns a keep function for GC that keeps the images the
// references name, such as "127.0.0.1:7070/default/hello@sha256:…" or
// "127.0.0.1:7070/default/hello:v1". The registry host is ignored (the
// registry is reached under many names), so a reference must name one for
// its repository to be read right: "hello:v1" alone means Docker Hub's
// "library/hello". It reports every reference it cannot parse.
func KeepReferences(refs []string) (func(Image) bool, error) {
	type key struct{ repo, id string }
	set := map[key]bool{}
	var errs []error
	for _, s := range refs {
		ref, err := name.ParseReference(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("image reference %q: %w", s, err))
			continue
		}
		set[key{ref.Context().RepositoryStr(), ref.Identifier()}] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return func(img Image) bool {
		if set[key{img.Repository, img.Digest.String()}] {
			return true
		}
		for _, t := range img.Tags {
			if set[key{img.Repository, t}] {
				return true
			}
		}
		return false
	}, nil
}
