package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// LoginOptions are the inputs of `surge login`.
type LoginOptions struct {
	Streams
	// Path is the client config file to write.
	Path string
	// ReadFile reads --token-file and --ca-file; nil is os.ReadFile.
	ReadFile func(string) ([]byte, error)

	Server    string
	TokenFile string
	CAFile    string
	Name      string
	Namespace string
}

func newLoginCmd(s Streams, g *Globals, d deps) *cobra.Command {
	o := &LoginOptions{Streams: s, ReadFile: d.readFile}
	c := &cobra.Command{
		Use:   "login URL --token-file FILE [--ca-file CA] [--name NAME]",
		Short: "Add a server to the client config as a context, and use it",
		Long: `Login checks that the API at URL takes the token in FILE ("-" reads it from
stdin), then keeps the server, the token and the CA that signed its certificate
as a context of the client config (named after the URL's host, or --name), and
makes it current. Other servers stay in the file: surge config use-context
switches between them.`,
		Example: `  surge login https://10.0.0.1:7070 --token-file admin-token --ca-file ca.crt
  surge login https://surge.example.com:7070 --token-file - --name prod < token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Server, o.Path, o.CAFile, o.Namespace = args[0], g.UserConfigPath(), g.caFile, g.namespace
			return runLogin(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.TokenFile, "token-file", "", "file holding the API token (required; - for stdin)")
	c.Flags().StringVar(&o.Name, "name", "", "the context's name (default: the URL's host)")
	return c
}

func runLogin(ctx context.Context, o *LoginOptions) error {
	u, err := url.Parse(o.Server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return usagef("login %q: want the API's URL, like https://10.0.0.1:7070", o.Server)
	}
	if o.TokenFile == "" {
		return usagef("--token-file is required: the file holding your API token, or - for stdin")
	}
	read := o.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	var tok []byte
	if o.TokenFile == "-" {
		tok, err = io.ReadAll(io.LimitReader(o.In, 64<<10))
	} else {
		tok, err = read(o.TokenFile)
	}
	if err != nil {
		return fmt.Errorf("--token-file %s: %w", o.TokenFile, err)
	}
	cfg := client.Config{Server: strings.TrimRight(o.Server, "/"), Token: strings.TrimSpace(string(tok)), Namespace: o.Namespace}
	if cfg.Token == "" {
		return fmt.Errorf("--token-file %s is empty: it should hold an API token", o.TokenFile)
	}
	if o.CAFile != "" {
		ca, err := read(o.CAFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		cfg.CertificateAuthority = string(ca)
	}
	c, err := client.New(&cfg)
	if err != nil {
		return err
	}
	var who struct {
		ID   string `json:"id"`
		Role string `json:"role"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		return loginError(o, err)
	}
	name := o.Name
	if name == "" {
		name = u.Host
	}
	f, err := client.LoadFile(o.Path)
	switch {
	case errors.Is(err, client.ErrNoConfig):
		f = &client.File{}
	case err != nil:
		return err
	}
	f.Set(name, cfg)
	f.CurrentContext = name
	if err := f.Save(o.Path); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "logged in to %s as %s (token %s); context %q is current\n", cfg.Server, who.Role, who.ID, name)
	return nil
}

// loginError says what to do about a server that refused the login.
func loginError(o *LoginOptions, err error) error {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &ua) || errors.As(err, &ci):
		return fmt.Errorf("login %s: the server's certificate is not trusted: pass --ca-file with its CA (the server's DATA_DIR/pki/ca.crt)", o.Server)
	case errors.As(err, &hn):
		return fmt.Errorf("login %s: the server's certificate is not for this host (%v): use a name it has, or restart the server with --tls-san", o.Server, err)
	case errors.Is(err, api.ErrUnauthorized):
		return fmt.Errorf("login %s: the server refused the token in %s: check it, or make one with `surge token create`", o.Server, o.TokenFile)
	}
	return fmt.Errorf("login %s: %w", o.Server, err)
}
