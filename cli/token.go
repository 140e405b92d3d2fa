package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TokenOptions are the inputs of `surge token`'s verbs.
type TokenOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	// WriteFile writes a new token's file, failing if it exists; nil
	// writes with mode 0600 (writeNewFile).
	WriteFile func(path string, data []byte) error

	IDs         []string
	Role        string
	Description string
	File        string
	Output      string
}

// tokenRoles are the roles a token may have, in the order help lists them.
var tokenRoles = []string{"admin", "viewer", "gateway", "node", "metrics"}

func newTokenCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &TokenOptions{Streams: s, NewClient: newClient, Now: d.now}
	c := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Make, list and revoke API tokens (admins only)",
		Long: `A token is ID.SECRET: the API keeps the SHA-256 of SECRET only, and shows a
token's secret once, when it is made. Roles: admin (everything), viewer (reads,
with environment values and passwords redacted), gateway (what a gateway
needs), node (a join token: it only obtains a node's certificate), metrics
(what Prometheus needs: every role's metrics and their discovery, nothing else).

Rotate a token by making its successor, handing it out, then revoking the old
one: every API server refuses a revoked token at its next request, and the
watches it holds open end within moments.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	create := &cobra.Command{
		Use:   "create --role ROLE --file FILE [--description TEXT]",
		Short: "Make a token and write it to a file (mode 0600)",
		Example: `  surge token create --role viewer --description dashboard --file viewer-token
  surge token create --role node --file join-token     # a new join token
  surge token create --role gateway --file - | ssh gw1 'cat > gateway-token'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTokenCreate(cmd.Context(), o) },
	}
	create.Flags().StringVar(&o.Role, "role", "", "the token's role: "+strings.Join(tokenRoles, ", ")+" (required)")
	create.Flags().StringVar(&o.Description, "description", "", "what the token is for, shown by surge token ls")
	create.Flags().StringVarP(&o.File, "file", "f", "", "new file to write the token to (mode 0600), or - for stdout (required)")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the tokens: ID, role, age and description, never a secret",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runTokenLs(cmd.Context(), o) },
	}
	addOutputFlag(ls, &o.Output)
	revoke := &cobra.Command{
		Use:   "revoke ID...",
		Short: "Revoke tokens: every API server refuses them from now on",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.IDs = args
			return runTokenRevoke(cmd.Context(), o)
		},
		ValidArgsFunction: completeNames(newClient, 0, tokenIDs),
	}
	c.AddCommand(create, ls, revoke)
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
	return c
}

func tokenIDs(ctx context.Context, c *client.Client, _ []string) ([]string, error) {
	var l api.List[api.Token]
	if err := c.Do(ctx, http.MethodGet, "/v1/tokens", nil, &l); err != nil {
		return nil, err
	}
	out := make([]string, len(l.Items))
	for i, t := range l.Items {
		out[i] = t.ID
	}
	return out, nil
}

func runTokenCreate(ctx context.Context, o *TokenOptions) error {
	switch {
	case o.Role == "":
		return usagef("--role is required: one of %s", strings.Join(tokenRoles, ", "))
	case !slices.Contains(tokenRoles, o.Role):
		return usagef("--role %q: want one of %s", o.Role, strings.Join(tokenRoles, ", "))
	case o.File == "":
		return usagef("--file is required: the new file to write the token to (mode 0600), or - for stdout")
	}
	if o.File != "-" {
		// Refuse before the token exists, rather than make one nobody keeps.
		if _, err := os.Lstat(o.File); err == nil {
			return fmt.Errorf("--file %s exists: name a new file, or remove it first", o.File)
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	var made api.NewToken
	if err := c.Do(ctx, http.MethodPost, "/v1/tokens", api.TokenRequest{Role: o.Role, Description: o.Description}, &made); err != nil {
		return describeTokenError("", err)
	}
	if o.File == "-" {
		fmt.Fprintln(o.Out, made.Secret)
		fmt.Fprintf(o.Err, "token %s (role %s) made; this is the only time its secret is shown\n", made.ID, made.Role)
		return nil
	}
	write := o.WriteFile
	if write == nil {
		write = writeNewFile
	}
	if err := write(o.File, []byte(made.Secret+"\n")); err != nil {
		// The token exists but nobody holds it: take it back.
		_ = c.Do(ctx, http.MethodDelete, "/v1/tokens/"+made.ID, nil, nil)
		return fmt.Errorf("write --file %s: %w", o.File, err)
	}
	fmt.Fprintf(o.Out, "token %s (role %s) written to %s\n", made.ID, made.Role, o.File)
	return nil
}

// writeNewFile writes data to a file that must not exist yet, readable by
// its owner only.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: name a new file, or remove it first", path)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

func runTokenLs(ctx context.Context, o *TokenOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	var l api.List[api.Token]
	if err := c.Do(ctx, http.MethodGet, "/v1/tokens", nil, &l); err != nil {
		return describeTokenError("", err)
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, l.Items)
	}
	t := newTable(o.Out, "ID", "ROLE", "AGE", "DESCRIPTION")
	now := o.Now()
	for _, tok := range l.Items {
		t.row(tok.ID, tok.Role, age(now, tok.Created), tok.Description)
	}
	return t.flush()
}

// tokenID is a token's ID: the 12 hex digits before its dot.
var tokenID = regexp.MustCompile(`^[0-9a-f]{12}$`)

func runTokenRevoke(ctx context.Context, o *TokenOptions) error {
	for _, id := range o.IDs {
		if strings.Contains(id, ".") {
			return usagef("give the token's ID (the 12 digits before its dot, as surge token ls shows), not the whole token")
		}
		if !tokenID.MatchString(id) {
			return usagef("token ID %q: want 12 hex digits, as surge token ls shows", id)
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	for _, id := range o.IDs {
		if err := c.Do(ctx, http.MethodDelete, "/v1/tokens/"+id, nil, nil); err != nil {
			return describeTokenError(id, err)
		}
		fmt.Fprintf(o.Out, "token %s revoked: every API server refuses it from now on\n", id)
	}
	return nil
}

// describeTokenError is the one line a user reads for a failed token
// request; id is the token's, when there is one.
func describeTokenError(id string, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Code {
	case http.StatusNotFound:
		return fmt.Errorf("token %s not found: `surge token ls` lists them", id)
	case http.StatusForbidden:
		return fmt.Errorf("%s: tokens are for admins", ae.Message)
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: log in again with `surge login URL --token-file FILE`, or pass --token-file FILE", ae.Message)
	}
	return fmt.Errorf("%s", ae.Message)
}
