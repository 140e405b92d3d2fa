package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is what a client needs to reach the API: the file `surge server`
// writes at its first start, and every CLI verb reads.
type Config struct {
	// Server is the API's base URL, e.g. "https://127.0.0.1:7070".
	Server string `json:"server"`
	// CertificateAuthority is the PEM of the CA that signed the server's
	// certificate. Empty means the system's roots.
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	// Token is sent as "Authorization: Bearer TOKEN".
	Token string `json:"token"`
	// Namespace is the default namespace of this client's objects.
	Namespace string `json:"namespace,omitempty"`
}

// ConfigEnv names the environment variable that points at a config file.
const ConfigEnv = "SURGE_CONFIG"

// DefaultConfigPath is $SURGE_CONFIG, else ~/.surge/config.yaml.
func DefaultConfigPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".surge", "config.yaml")
	}
	return filepath.Join(home, ".surge", "config.yaml")
}

// ErrNoConfig is returned by LoadConfig when the file does not exist.
var ErrNoConfig = errors.New("no client config")

// LoadConfig reads a client config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoConfig, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("read client config %s: %w", path, err)
	}
	return &c, nil
}

// Marshal returns the config as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }
