package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config is what a client needs to reach the API: the file `surge server`
// writes at its first start, and every CLI verb reads.
type Config struct {
	// Server is the API's base URL, e.g. "https://127.0.0.1:7070". It may
	// list the URLs of several servers of one cluster, comma-separated (as
	// --api takes them); the client fails over between them.
	Server string `json:"server"`
	// Servers are more API servers of the same cluster, after Server's.
	Servers []string `json:"servers,omitempty"`
	// CertificateAuthority is the PEM of the CA that signed the server's
	// certificate. Empty means the system's roots.
	CertificateAuthority string `json:"certificateAuthority,omitempty"`
	// Token is sent as "Authorization: Bearer TOKEN".
	Token string `json:"token"`
	// Namespace is the default namespace of this client's objects.
	Namespace string `json:"namespace,omitempty"`
}

// Endpoints returns every API URL the config names: Server's, then
// Servers, without blanks or repeats, in order.
func (c *Config) Endpoints() []string {
	var out []string
	for _, s := range append(strings.Split(c.Server, ","), c.Servers...) {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// WithEndpoints returns a copy of c whose Server is the first of urls and
// Servers the others: the form a role that reads Server as one URL takes.
func (c Config) WithEndpoints(urls []string) Config {
	c.Server, c.Servers = "", nil
	if len(urls) > 0 {
		c.Server, c.Servers = urls[0], append([]string(nil), urls[1:]...)
	}
	return c
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
