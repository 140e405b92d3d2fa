package client_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/client"
)

// TestContexts: a single-server file reads as one context; a second
// context turns it into the contexts form, and the current one decides
// what LoadConfig returns.
func TestContexts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	local := client.Config{Server: "https://127.0.0.1:7070", Token: "local-token"}
	b, err := local.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := client.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.CurrentContext != client.DefaultContext || len(f.Contexts) != 1 {
		t.Fatalf("single-server file read as %+v, want one context %q", f, client.DefaultContext)
	}
	prod := client.Config{Server: "https://10.0.0.1:7070", Token: "prod-token", CertificateAuthority: "PEM", Namespace: "team"}
	f.Set("prod", prod)
	if err := f.Use("prod"); err != nil {
		t.Fatal(err)
	}
	if err := f.Use("nope"); !errors.Is(err, client.ErrNoContext) {
		t.Errorf("Use(nope) = %v, want ErrNoContext", err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := client.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&prod, got); diff != "" {
		t.Errorf("current context (-want +got):\n%s", diff)
	}
	f, _ = client.LoadFile(path)
	if c, err := f.Context(client.DefaultContext); err != nil || !cmp.Equal(*c, local) {
		t.Errorf("the first server kept as %q: %+v, %v", client.DefaultContext, c, err)
	}
	f.Set("prod", client.Config{Server: prod.Server, Token: "new"})
	if c, _ := f.Context("prod"); c.Token != "new" || len(f.Contexts) != 2 {
		t.Errorf("Set of an existing name replaces it: %+v, %d contexts", c, len(f.Contexts))
	}

	for name, body := range map[string]string{
		"both forms":  "server: https://a\ntoken: t\ncontexts:\n- name: x\n  server: https://b\n  token: u\n",
		"nameless":    "contexts:\n- server: https://b\n  token: u\n",
		"twice":       "contexts:\n- name: x\n  server: https://b\n- name: x\n  server: https://c\n",
		"unknown key": "contexts:\n- name: x\n  sever: https://b\n",
	} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := client.LoadConfig(path); err == nil {
			t.Errorf("%s: LoadConfig succeeded", name)
		}
	}
	if err := os.WriteFile(path, []byte("currentContext: gone\ncontexts:\n- name: x\n  server: https://b\n  token: u\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadConfig(path); !errors.Is(err, client.ErrNoContext) {
		t.Errorf("a current context that is not there: %v, want ErrNoContext", err)
	}
}
