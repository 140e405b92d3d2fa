package api

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// PinnedImage is image pinned to digest: "host/repo:tag@sha256:…", which
// keeps the tag for people and makes every runtime pull the digest. An
// empty digest, or an image that names a digest already, leaves image as
// it is.
func PinnedImage(image, digest string) string {
	if digest == "" || strings.Contains(image, "@") {
		return image
	}
	return image + "@" + digest
}

// ImageRegistry returns the registry host[:port] of an image reference,
// as PullSecretSpec.Registry names it: "ghcr.io", "10.0.0.1:7070", and
// "docker.io" for Docker Hub. ok is false for a reference that does not
// parse.
func ImageRegistry(image string) (host string, ok bool) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return "", false
	}
	return NormalizeRegistry(ref.Context().RegistryStr()), true
}

// NormalizeRegistry lowercases a registry host and gives Docker Hub's
// several names one, "docker.io".
func NormalizeRegistry(host string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "/"))
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return host
}
