package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenCreateWritesAFileForItsOwner: the secret goes to a new file of
// mode 0600, and nowhere else.
func TestTokenCreateWritesAFileForItsOwner(t *testing.T) {
	e := newVerbEnv(t)
	out := e.run("token create --role node --file {{DIR}}/join-token", "")
	if strings.Contains(out, "fake-secret") {
		t.Errorf("create printed the secret:\n%s", out)
	}
	path := filepath.Join(e.dir, "join-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != "3d4e5f607182.fake-secret-of-3d4e5f607182\n" {
		t.Errorf("%s holds %q", path, b)
	}
}

// TestTokenCreateTakesBackATokenItCannotWrite: a token whose file cannot
// be written is revoked, rather than left for nobody.
func TestTokenCreateTakesBackATokenItCannotWrite(t *testing.T) {
	f := seededFake(t)
	s, _, _ := testStreams()
	o := &TokenOptions{Streams: s, NewClient: f.newClient, Role: "viewer", File: filepath.Join(t.TempDir(), "t"),
		WriteFile: func(string, []byte) error { return errors.New("disk full") }}
	err := runTokenCreate(t.Context(), o)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("create: %v, want the write's error", err)
	}
	f.edit(func() {
		for _, tok := range f.tokens {
			if tok.Role == "viewer" {
				t.Errorf("token %s was left behind", tok.ID)
			}
		}
	})
}
