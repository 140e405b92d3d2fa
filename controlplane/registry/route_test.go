package registry

import "testing"

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		path      string
		kind      routeKind
		repo, ref string
		ok        bool
	}{
		{"hello/tags/list", routeTags, "hello", "", true},
		{"team/hello/manifests/v1", routeManifest, "team/hello", "v1", true},
		{"hello/blobs/sha256:ab", routeBlob, "hello", "sha256:ab", true},
		{"hello/blobs/uploads/", routeUploads, "hello", "", true},
		{"hello/blobs/uploads/0123", routeUpload, "hello", "0123", true},
		// Repository names may hold the words the routes use.
		{"blobs/manifests/manifests/v1", routeManifest, "blobs/manifests", "v1", true},
		{"a/blobs/b/blobs/sha256:ab", routeBlob, "a/blobs/b", "sha256:ab", true},
		{"manifests/blobs/uploads/", routeUploads, "manifests", "", true},
		{"hello/manifests/", 0, "", "", false},
		{"hello/blobs/", 0, "", "", false},
		{"hello/referrers/sha256:ab", 0, "", "", false},
		{"hello", 0, "", "", false},
	} {
		kind, repo, ref, ok := parseRoute(tc.path)
		if kind != tc.kind || repo != tc.repo || ref != tc.ref || ok != tc.ok {
			t.Errorf("parseRoute(%q) = %v, %q, %q, %v; want %v, %q, %q, %v",
				tc.path, kind, repo, ref, ok, tc.kind, tc.repo, tc.ref, tc.ok)
		}
	}
}
