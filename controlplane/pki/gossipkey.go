package pki

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GossipKeyFile is the file, in the PKI directory, of the cluster's gossip
// key.
const GossipKeyFile = "gossip.key"

// GossipKeySize is the size of a gossip key: AES-256.
const GossipKeySize = 32

// LoadOrCreateGossipKey reads DIR/gossip.key, making it at the first start:
// 32 random bytes, hex-encoded, mode 0600. It keys the cluster's gossip
// (encrypted and authenticated with AES-256-GCM). It is a secret of its
// own, not derived from any token: agents and gateways fetch it from the
// API with their own credentials (a node's certificate, a gateway token),
// so that the join token, which every node host holds, cannot be used to
// gossip.
func LoadOrCreateGossipKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, GossipKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, GossipKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("make gossip key: %w", err)
		}
		if err := WriteFileAtomic(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write gossip key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read gossip key: %w", err)
	}
	key, err := ParseGossipKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("gossip key %s: %w", path, err)
	}
	return key, nil
}

// ParseGossipKey decodes a hex-encoded gossip key, as the file and the API
// carry it.
func ParseGossipKey(s string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", err)
	}
	if len(key) != GossipKeySize {
		return nil, fmt.Errorf("%d bytes, want %d", len(key), GossipKeySize)
	}
	return key, nil
}
