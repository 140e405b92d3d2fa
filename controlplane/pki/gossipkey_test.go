package pki_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/controlplane/pki"
)

// TestGossipKey: the first start makes a random key in a file of mode
// 0600; later starts read the same; a damaged file is an error naming it,
// never a new key (which would split the cluster's gossip).
func TestGossipKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := pki.LoadOrCreateGossipKey(dir)
	if err != nil || len(k1) != pki.GossipKeySize {
		t.Fatalf("make: %x, %v; want %d bytes", k1, err, pki.GossipKeySize)
	}
	path := filepath.Join(dir, pki.GossipKeyFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}
	k2, err := pki.LoadOrCreateGossipKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("second start read %x, %v; want %x", k2, err, k1)
	}
	if other, _ := pki.LoadOrCreateGossipKey(t.TempDir()); bytes.Equal(other, k1) {
		t.Error("two clusters made one key")
	}
	if err := os.WriteFile(path, []byte("abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateGossipKey(dir); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "2 bytes, want 32") {
		t.Errorf("a short key file: %v, want an error naming it", err)
	}
}
