package controlplane

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

// A snapshot is a tar stream of:
//
//	surge-snapshot.json   snapshotInfo: versions, time, images left out
//	etcd.db               etcd's own snapshot (Maintenance.Snapshot), with its hash
//	pki/ca.crt, …         the cluster files (clusterFiles) and admin.yaml
//	registry/blobs/…      the registry's content and repositories, complete
//	registry/repositories/…  for every image a function or revision names
//
// Restore makes a data dir of it, for a new server that is then the first
// of a new cluster with the old one's objects, tokens, CA and images.
const (
	snapshotInfoFile = "surge-snapshot.json"
	snapshotEtcdFile = "etcd.db"
	snapshotRegistry = "registry/"
)

// snapshotInfo describes a snapshot.
type snapshotInfo struct {
	// Version is the build of the server that made it.
	Version string `json:"version"`
	// APIVersion and StorageVersion are what its objects are: a server
	// restores only a snapshot whose storage version it reads.
	APIVersion     string    `json:"apiVersion"`
	StorageVersion int       `json:"storageVersion"`
	Created        time.Time `json:"created"`
	// Server names the server that made it.
	Server string `json:"server"`
	// MissingImages are images of this cluster's registry that functions
	// or revisions name but that no running server had: the snapshot is
	// without them.
	MissingImages []string `json:"missingImages,omitempty"`
}

// SnapshotMissingHeader lists, on a snapshot's answer, the images that no
// running server had and that the snapshot is without, comma-separated.
const SnapshotMissingHeader = "Surge-Snapshot-Missing"

// restoreRevisionBump is added to etcd's revision on restore, and the
// revision before marked compacted: every watch of a client of the old
// cluster then ends with 410 Gone, and the client lists anew, instead of
// waiting for revisions the new cluster reached long ago.
const restoreRevisionBump = 1_000_000_000

// handleSnapshot answers POST /v1/cluster/snapshot with a snapshot. It
// first fetches, from the other servers, the images it lacks that
// functions and revisions name, so that the snapshot holds every one.
func (s *Server) handleSnapshot(db *etcdConn, p *parts) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		missing, err := s.gatherImages(ctx, p)
		if err != nil {
			writeAPIError(w, s.log, unavailable("snapshot: %v", err))
			return
		}
		tmp, err := os.CreateTemp(s.cfg.DataDir, ".snapshot-*.db")
		if err == nil {
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			err = copySnapshot(ctx, db, tmp)
		}
		if err != nil {
			writeAPIError(w, s.log, unavailable("snapshot of etcd: %v", err))
			return
		}
		info := snapshotInfo{Version: s.version, APIVersion: api.Version, StorageVersion: StorageVersion,
			Created: s.clock.Now().UTC(), Server: s.cfg.Name, MissingImages: missing}
		w.Header().Set("Content-Type", "application/x-tar")
		if len(missing) > 0 {
			w.Header().Set(SnapshotMissingHeader, strings.Join(missing, ", "))
		}
		w.WriteHeader(http.StatusOK)
		if err := s.writeSnapshot(w, info, tmp); err != nil {
			// The answer has begun: cut it, so the client sees a broken tar.
			s.log.Error("snapshot cut short", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// copySnapshot writes etcd's snapshot to f.
func copySnapshot(ctx context.Context, db *etcdConn, f *os.File) error {
	rc, err := db.client.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(f, rc); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// gatherImages makes this server's registry hold every image of the
// cluster's registry that a function or revision names, fetching what it
// lacks from the other servers. It returns the images it could not find.
func (s *Server) gatherImages(ctx context.Context, p *parts) ([]string, error) {
	fns, _, err := store.List[api.Function](ctx, p.store, store.Scope{})
	if err != nil {
		return nil, err
	}
	revs, _, err := store.List[api.Revision](ctx, p.store, store.Scope{})
	if err != nil {
		return nil, err
	}
	refs := make([]string, 0, len(fns)+len(revs))
	for _, f := range fns {
		refs = append(refs, f.Spec.Image)
	}
	for _, r := range revs {
		refs = append(refs, r.Spec.Template.Image)
	}
	ours, err := s.registryHosts(ctx, p)
	if err != nil {
		return nil, err
	}
	images := &replicated{local: p.images, peers: p.peers, etcd: p.store.Client(), log: s.log}
	var missing []string
	for _, ref := range slices.Compact(slices.Sorted(slices.Values(refs))) {
		r, err := name.ParseReference(ref)
		if err != nil || !slices.Contains(ours, r.Context().RegistryStr()) {
			continue // another registry's: not the cluster's to keep
		}
		repo := r.Context().RepositoryStr()
		if d, ok := r.(name.Digest); ok {
			err = images.ensureManifest(ctx, repo, d.DigestStr())
		} else if err = images.followTag(ctx, repo, r.Identifier()); err == nil && !images.localHas(ctx, "/v2/"+repo+"/manifests/"+r.Identifier()) {
			err = errors.New("not found")
		}
		if err != nil {
			s.log.Warn("snapshot: an image is on no running server", "image", ref, "err", err)
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// registryHosts are the HOST:PORTs image references name this cluster's
// registry by: every running server's API address, this one's included.
func (s *Server) registryHosts(ctx context.Context, p *parts) ([]string, error) {
	all, err := listServers(ctx, p.store.Client())
	if err != nil {
		return nil, err
	}
	hosts := []string{hostOf(s.apiURL())}
	for _, si := range all {
		hosts = append(hosts, hostOf(si.APIURL))
	}
	return hosts, nil
}

// hostOf is a URL's HOST:PORT.
func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Host
	}
	return ""
}

// writeSnapshot writes the tar stream: the info, etcd's snapshot, the
// cluster's files, then the registry's content and repositories.
func (s *Server) writeSnapshot(w io.Writer, info snapshotInfo, etcdDB *os.File) error {
	tw := tar.NewWriter(w)
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := writeTarFile(tw, snapshotInfoFile, 0o644, info.Created, int64(len(b)), strings.NewReader(string(b))); err != nil {
		return err
	}
	fi, err := etcdDB.Stat()
	if err != nil {
		return err
	}
	if err := writeTarFile(tw, snapshotEtcdFile, 0o600, info.Created, fi.Size(), etcdDB); err != nil {
		return err
	}
	for _, rel := range append(slices.Clone(clusterFiles), AdminConfigFile) {
		if err := addTarFile(tw, s.cfg.DataDir, rel); err != nil {
			return err
		}
	}
	for _, sub := range []string{"blobs", "repositories"} {
		root := filepath.Join(s.cfg.DataDir, "registry", sub)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(s.cfg.DataDir, p)
			if err != nil {
				return err
			}
			return addTarFile(tw, s.cfg.DataDir, filepath.ToSlash(rel))
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return tw.Close()
}

// addTarFile adds the data dir's file rel to the tar stream.
func addTarFile(tw *tar.Writer, dataDir, rel string) error {
	f, err := os.Open(filepath.Join(dataDir, filepath.FromSlash(rel)))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return writeTarFile(tw, rel, fileMode(rel), fi.ModTime(), fi.Size(), f)
}

func writeTarFile(tw *tar.Writer, name string, mode os.FileMode, mtime time.Time, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(mode), Size: size, ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, r, size); err != nil {
		return fmt.Errorf("snapshot %s: %w", name, err)
	}
	return nil
}

// RestoreSnapshot makes a new server's data dir, cfg.DataDir, from a
// snapshot: its etcd (a one-member cluster named cfg.Name, with its peer
// URL at cfg.EtcdPeerAddr, the revision bumped and the history before it
// compacted), its CA, tokens and admin config, and its registry. `surge
// server` with the same configuration then serves the old cluster's
// objects; other servers join it anew. The data dir must hold no etcd
// data yet.
func RestoreSnapshot(ctx context.Context, cfg Config, file string) (err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.EtcdEndpoints) > 0 {
		return errors.New("restore: a snapshot restores an embedded etcd; restore an external etcd with etcdutl")
	}
	if fileExists(filepath.Join(cfg.DataDir, "etcd")) {
		return fmt.Errorf("restore: --data-dir %s already holds etcd's data: restore into a new data dir", cfg.DataDir)
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "logs"), 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, "restore-etcd.db")
	defer os.Remove(dbPath)
	info, sawDB, err := unpackSnapshot(ctx, f, cfg.DataDir, dbPath)
	if err != nil {
		return fmt.Errorf("restore %s: %w", file, err)
	}
	switch {
	case info == nil || !sawDB:
		return fmt.Errorf("restore %s: not a Surge snapshot (no %s or %s)", file, snapshotInfoFile, snapshotEtcdFile)
	case info.StorageVersion > StorageVersion:
		return fmt.Errorf("restore %s: its storage version %d is newer than this server's %d: restore it with a newer surge", file, info.StorageVersion, StorageVersion)
	}
	peer := "https://" + cfg.EtcdPeerAddr
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        dbPath,
		Name:                cfg.Name,
		OutputDataDir:       filepath.Join(cfg.DataDir, "etcd"),
		PeerURLs:            []string{peer},
		InitialCluster:      cfg.Name + "=" + peer,
		InitialClusterToken: "surge",
		RevisionBump:        restoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("restore %s: etcd: %w", file, err)
	}
	return nil
}

// unpackSnapshot writes a snapshot's files into dataDir, and etcd's
// snapshot to dbPath. It refuses any name outside the files a snapshot
// holds.
func unpackSnapshot(ctx context.Context, r io.Reader, dataDir, dbPath string) (*snapshotInfo, bool, error) {
	tr := tar.NewReader(r)
	var info *snapshotInfo
	sawDB := false
	allowed := append(slices.Clone(clusterFiles), AdminConfigFile)
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return info, sawDB, nil
		}
		if err != nil {
			return nil, false, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		clean := path.Clean(h.Name)
		switch {
		case clean == snapshotInfoFile:
			info = &snapshotInfo{}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(info); err != nil {
				return nil, false, fmt.Errorf("%s: %w", snapshotInfoFile, err)
			}
			continue
		case clean == snapshotEtcdFile:
			sawDB = true
			err = writeFrom(dbPath, tr, 0o600)
		case slices.Contains(allowed, clean),
			(strings.HasPrefix(clean, snapshotRegistry+"blobs/") || strings.HasPrefix(clean, snapshotRegistry+"repositories/")) &&
				!strings.Contains(clean, "..") && !path.IsAbs(clean):
			err = writeFrom(filepath.Join(dataDir, filepath.FromSlash(clean)), tr, fileMode(clean))
		default:
			return nil, false, fmt.Errorf("unexpected file %q", h.Name)
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// writeFrom writes r to path, making its directory.
func writeFrom(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
