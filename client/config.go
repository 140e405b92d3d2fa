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

// Config is what a client needs to reach the API: one server's address,
// trust and token. A config file holds one (the form `surge server` writes
// at its first start) or several, as contexts (see File).
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

// ErrNoContext is returned for a context name a config file lacks.
var ErrNoContext = errors.New("no such context")

// LoadConfig reads a client config file and returns its current context.
func LoadConfig(path string) (*Config, error) {
	f, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return f.Current()
}

// Marshal returns the config as YAML: a config file of one server.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// DefaultContext is the name of the one context of a file written in the
// single-server form.
const DefaultContext = "default"

// File is a client config file: several servers, each a named context,
// and the one in use. The single-server form that `surge server` writes
// (a Config at the top level) reads as one context, DefaultContext, and is
// written back in the contexts form once a second one joins it.
type File struct {
	// CurrentContext names the context the verbs use unless told otherwise
	// (--context).
	CurrentContext string `json:"currentContext,omitempty"`
	// Contexts are the servers this client knows, by name.
	Contexts []Context `json:"contexts,omitempty"`

	// The single-server form's fields; LoadFile moves them into Contexts.
	Server               string   `json:"server,omitempty"`
	Servers              []string `json:"servers,omitempty"`
	CertificateAuthority string   `json:"certificateAuthority,omitempty"`
	Token                string   `json:"token,omitempty"`
	Namespace            string   `json:"namespace,omitempty"`
}

// Context is one named server of a File.
type Context struct {
	// Name is how `surge config use-context` and --context call it.
	Name string `json:"name"`
	Config
}

// LoadFile reads a config file, in either form. A missing file is
// ErrNoConfig.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoConfig, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("read client config %s: %w", path, err)
	}
	if f.Server != "" || f.Token != "" {
		if len(f.Contexts) > 0 {
			return nil, fmt.Errorf("read client config %s: give either server and token at the top or contexts, not both", path)
		}
		f.Contexts = []Context{{Name: DefaultContext, Config: Config{Server: f.Server, Servers: f.Servers,
			CertificateAuthority: f.CertificateAuthority, Token: f.Token, Namespace: f.Namespace}}}
		f.CurrentContext = DefaultContext
		f.Server, f.Servers, f.CertificateAuthority, f.Token, f.Namespace = "", nil, "", "", ""
	}
	seen := map[string]bool{}
	for _, c := range f.Contexts {
		if c.Name == "" || seen[c.Name] {
			return nil, fmt.Errorf("read client config %s: every context needs a name of its own (%q)", path, c.Name)
		}
		seen[c.Name] = true
	}
	return &f, nil
}

// Context returns the context called name.
func (f *File) Context(name string) (*Config, error) {
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			c := f.Contexts[i].Config
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrNoContext, name)
}

// Current returns the current context; a file of one context needs none
// named.
func (f *File) Current() (*Config, error) {
	if f.CurrentContext == "" {
		switch len(f.Contexts) {
		case 0:
			return nil, fmt.Errorf("%w: the file has no server", ErrNoConfig)
		case 1:
			c := f.Contexts[0].Config
			return &c, nil
		}
		return nil, fmt.Errorf("%w: the file names no current context", ErrNoContext)
	}
	return f.Context(f.CurrentContext)
}

// Set adds the context name, or replaces it.
func (f *File) Set(name string, c Config) {
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			f.Contexts[i].Config = c
			return
		}
	}
	f.Contexts = append(f.Contexts, Context{Name: name, Config: c})
}

// Use makes name the current context.
func (f *File) Use(name string) error {
	if !slices.ContainsFunc(f.Contexts, func(c Context) bool { return c.Name == name }) {
		return fmt.Errorf("%w %q", ErrNoContext, name)
	}
	f.CurrentContext = name
	return nil
}

// Save writes the file at path, readable by its owner only (it holds
// tokens), replacing it whole or not at all.
func (f *File) Save(path string) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b)
}

// WriteFileAtomic writes a private file (mode 0600, its directory 0700
// when made) through a temporary file renamed into place.
func WriteFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*")
	if err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write client config: %w", err)
	}
	return nil
}
