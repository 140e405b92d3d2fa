package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/cli"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
)

// TestSnapshotSave: the snapshot comes from the first server that answers,
// is written whole to FILE (mode 0600: it holds the cluster's keys), and
// the images it is without are named on stderr.
func TestSnapshotSave(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/cluster/snapshot" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		w.Header().Set(controlplane.SnapshotMissingHeader, "h:7070/default/gone@sha256:x")
		w.Write([]byte("the snapshot"))
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	var out, errb bytes.Buffer
	file := filepath.Join(t.TempDir(), "snap.tar")
	o := &SnapshotSaveOptions{
		Streams: cli.Streams{Out: &out, Err: &errb},
		NewClient: func() (*client.Client, error) {
			return client.New(&client.Config{Server: dead.URL + "," + srv.URL, Token: "tok", CertificateAuthority: ca})
		},
		File: file,
	}
	if err := runSnapshotSave(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil || string(b) != "the snapshot" {
		t.Errorf("file holds %q (%v)", b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v (%v), want 0600", fi.Mode(), err)
	}
	if !strings.Contains(out.String(), "saved "+file) || !strings.Contains(errb.String(), "default/gone") {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}
	if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) != 1 {
		t.Errorf("left beside the file: %v", ents)
	}
}
