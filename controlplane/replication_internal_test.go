package controlplane

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
)

func TestOCIRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		path      string
		kind      ociKind
		repo, ref string
	}{
		{"/v2/default/hello/manifests/v1", ociManifest, "default/hello", "v1"},
		{"/v2/default/hello/blobs/" + d, ociBlob, "default/hello", d},
		{"/v2/team/blobs/manifests/" + d, ociManifest, "team/blobs", d},
		{"/v2/team/manifests/blobs/x", ociBlob, "team/manifests", "x"},
		{"/v2/default/hello/blobs/uploads/", ociOther, "", ""},
		{"/v2/default/hello/blobs/uploads/0123", ociOther, "", ""},
		{"/v2/default/hello/tags/list", ociOther, "", ""},
		{"/v2/", ociOther, "", ""},
		{"/v1/functions", ociOther, "", ""},
	} {
		kind, repo, ref := ociRoute(tc.path)
		if kind != tc.kind || repo != tc.repo || ref != tc.ref {
			t.Errorf("ociRoute(%q) = %v %q %q, want %v %q %q", tc.path, kind, repo, ref, tc.kind, tc.repo, tc.ref)
		}
	}
}

func TestIsDigest(t *testing.T) {
	for ref, want := range map[string]bool{
		"sha256:" + strings.Repeat("0a", 32): true,
		"sha256:" + strings.Repeat("0A", 32): false,
		"sha256:" + strings.Repeat("0a", 31): false,
		"sha512:" + strings.Repeat("0a", 32): false,
		"v1":                                 false,
	} {
		if isDigest(ref) != want {
			t.Errorf("isDigest(%q) = %v, want %v", ref, !want, want)
		}
	}
}

func TestManifestRefs(t *testing.T) {
	a, b, c := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64), "sha256:"+strings.Repeat("c", 64)
	img := `{"schemaVersion":2,"config":{"digest":"` + a + `"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + b +
		`"},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"` + c + `"}]}`
	got, err := manifestRefs([]byte(img))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(imageRefs{blobs: []string{a, b}}, got, cmp.AllowUnexported(imageRefs{})); diff != "" {
		t.Errorf("image manifest refs (-want +got):\n%s", diff)
	}
	idx := `{"schemaVersion":2,"manifests":[{"digest":"` + a + `"},{"digest":"` + b + `"}]}`
	got, err = manifestRefs([]byte(idx))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(imageRefs{children: []string{a, b}}, got, cmp.AllowUnexported(imageRefs{})); diff != "" {
		t.Errorf("index refs (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`not json`, `{"config":{"digest":"sha256:short"}}`} {
		if _, err := manifestRefs([]byte(bad)); err == nil {
			t.Errorf("manifestRefs(%q) accepted it", bad)
		}
	}
}

// TestStorageVersion: a new etcd gets this build's storage version; an
// etcd that holds a newer one is refused, naming the versions.
func TestStorageVersion(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	for range 2 { // recorded, then found
		if err := checkStorageVersion(ctx, cli); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, storageVersionKey, "99"); err != nil {
		t.Fatal(err)
	}
	if err := checkStorageVersion(ctx, cli); err == nil || !strings.Contains(err.Error(), "storage version 99") {
		t.Errorf("an etcd of storage version 99: %v, want it refused", err)
	}
}
