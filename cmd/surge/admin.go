package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
)

// newAdminCmd is `surge admin`: operating the control plane itself.
func newAdminCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "admin",
		Short: "Operate the control plane: snapshots",
	}
	snap := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the cluster to a file, or make a new server's data dir from one",
	}
	snap.AddCommand(newSnapshotSaveCmd(s, g), newSnapshotRestoreCmd(s))
	c.AddCommand(snap)
	return c
}

// SnapshotSaveOptions are the inputs of `surge admin snapshot save`.
type SnapshotSaveOptions struct {
	cli.Streams
	// NewClient makes the admin API client; tests replace it.
	NewClient func() (*client.Client, error)
	File      string
}

func newSnapshotSaveCmd(s cli.Streams, g *cli.Globals) *cobra.Command {
	o := &SnapshotSaveOptions{Streams: s, NewClient: func() (*client.Client, error) {
		cfg, err := g.ClientConfig()
		if err != nil {
			return nil, err
		}
		return client.New(cfg)
	}}
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save the cluster's etcd, CA, tokens and images to FILE",
		Long: `Save asks a server (the first of the client config's that answers, with an
admin token) for a snapshot: etcd's own snapshot, the CA and its key, the
tokens and the admin config, and every image a function or revision names,
which the server first fetches from the others where it lacks one. FILE
holds the cluster's keys: keep it as you keep the servers' data dirs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			return runSnapshotSave(cmd.Context(), o)
		},
	}
}

// runSnapshotSave writes the snapshot to o.File through a temporary file,
// so that FILE is whole or absent.
func runSnapshotSave(ctx context.Context, o *SnapshotSaveOptions) error {
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.File), "."+filepath.Base(o.File)+".*")
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	hc := &http.Client{Transport: c.Transport()}
	var errs []error
	for _, server := range c.Servers() {
		n, missing, err := fetchSnapshot(ctx, hc, server, c.Token(), tmp)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("snapshot save: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("snapshot save: %w", err)
		}
		if err := os.Rename(tmp.Name(), o.File); err != nil {
			return fmt.Errorf("snapshot save: %w", err)
		}
		if missing != "" {
			fmt.Fprintf(o.Err, "warning: no server had these images; the snapshot is without them: %s\n", missing)
		}
		fmt.Fprintf(o.Out, "saved %s (%d bytes) from %s\n", o.File, n, server)
		return nil
	}
	return fmt.Errorf("snapshot save: %w", errors.Join(errs...))
}

// fetchSnapshot streams one server's snapshot into f (emptied first) and
// returns its size and the images it is without.
func fetchSnapshot(ctx context.Context, hc *http.Client, server, token string, f *os.File) (int64, string, error) {
	if err := f.Truncate(0); err != nil {
		return 0, "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/v1/cluster/snapshot", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	n, err := io.Copy(f, resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("read the snapshot: %w", err)
	}
	return n, resp.Header.Get(controlplane.SnapshotMissingHeader), nil
}

// SnapshotRestoreOptions are the inputs of `surge admin snapshot restore`.
type SnapshotRestoreOptions struct {
	cli.Streams
	// Config is the server's configuration that the restored data dir is
	// for: its data dir, name, API and etcd peer addresses.
	Config controlplane.Config
	File   string
}

func newSnapshotRestoreCmd(s cli.Streams) *cobra.Command {
	o := &SnapshotRestoreOptions{Streams: s}
	d := controlplane.DefaultConfig()
	c := &cobra.Command{
		Use:   "restore FILE",
		Short: "Make a new server's data dir from a snapshot",
		Long: `Restore makes the data dir of a new server from a snapshot, offline: etcd (a
one-member cluster, its history marked compacted so that every client lists
anew), the CA, the tokens, the admin config and the images. Start
surge server with the same --data-dir, --name, --api-addr and
--etcd-peer-addr: it serves the old cluster's functions, and more servers
join it with --join-server.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			return runSnapshotRestore(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Config.DataDir, "data-dir", d.DataDir, "the new server's data dir (must hold no etcd data)")
	f.StringVar(&o.Config.Name, "name", "", "the new server's member name (default: the host name)")
	f.StringVar(&o.Config.APIAddr, "api-addr", d.APIAddr, "the new server's --api-addr")
	f.StringVar(&o.Config.EtcdPeerAddr, "etcd-peer-addr", "", "the new server's --etcd-peer-addr (default: --api-addr's host, port 7072)")
	return c
}

func runSnapshotRestore(ctx context.Context, o *SnapshotRestoreOptions) error {
	if o.Config.DataDir != "" && !filepath.IsAbs(o.Config.DataDir) {
		abs, err := filepath.Abs(o.Config.DataDir)
		if err != nil {
			return err
		}
		o.Config.DataDir = abs
	}
	if err := controlplane.RestoreSnapshot(ctx, o.Config, o.File); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "restored %s into %s: start it with surge server --data-dir %s (and the same --name, --api-addr, --etcd-peer-addr)\n",
		o.File, o.Config.DataDir, o.Config.DataDir)
	return nil
}
