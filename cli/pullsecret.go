package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// PullSecretOptions are the inputs of `surge pull-secret`'s verbs.
type PullSecretOptions struct {
	Streams
	NewClient clientFunc
	// ReadFile reads --password-file; nil is os.ReadFile.
	ReadFile func(string) ([]byte, error)
	Now      func() time.Time

	Names         []string
	Registry      string
	Username      string
	PasswordFile  string
	PasswordStdin bool
	Output        string
}

func newPullSecretCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &PullSecretOptions{Streams: s, NewClient: newClient, Now: d.now, ReadFile: d.readFile}
	c := &cobra.Command{
		Use:     "pull-secret",
		Aliases: []string{"pull-secrets"},
		Short:   "Keep the credentials of private registries, for the namespace's functions",
		Long: `A pull secret holds a private registry's credentials in a namespace. Nodes
pull a function's image with the namespace's pull secrets for the image's
registry (or only those the function names, surge deploy --pull-secret), and a
deploy resolves the image's tag to the digest it pins with them. Readers other
than admins and nodes see the password blanked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	set := &cobra.Command{
		Use:   "set NAME --registry HOST [--username USER] (--password-stdin | --password-file FILE)",
		Short: "Create or replace a pull secret",
		Example: `  echo "$GHCR_TOKEN" | surge pull-secret set ghcr --registry ghcr.io --username me --password-stdin
  surge deploy app --image ghcr.io/me/app:v1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Names = args
			return runPullSecretSet(cmd.Context(), o)
		},
	}
	set.Flags().StringVar(&o.Registry, "registry", "", "the registry's host[:port], as image references name it (required)")
	set.Flags().StringVar(&o.Username, "username", "", "user name (some registries take any, with a token as the password)")
	set.Flags().StringVar(&o.PasswordFile, "password-file", "", "file holding the password or token")
	set.Flags().BoolVar(&o.PasswordStdin, "password-stdin", false, "read the password or token from stdin")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the namespace's pull secrets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPullSecretLs(cmd.Context(), o)
		},
	}
	addOutputFlag(ls, &o.Output)
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete pull secrets",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Names = args
			return runPullSecretRm(cmd.Context(), o)
		},
		ValidArgsFunction: completeNames(newClient, 0, pullSecretNames),
	}
	c.AddCommand(set, ls, rm)
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
	return c
}

func pullSecretNames(ctx context.Context, c *client.Client, _ []string) ([]string, error) {
	return namesOf[api.PullSecret](ctx, c, c.Namespace(), nil)
}

func runPullSecretSet(ctx context.Context, o *PullSecretOptions) error {
	name := o.Names[0]
	if o.Registry == "" {
		return usagef("--registry is required: the registry's host, e.g. ghcr.io")
	}
	if o.PasswordStdin == (o.PasswordFile != "") {
		return usagef("give the password with --password-stdin or --password-file FILE (one of them)")
	}
	var pass []byte
	var err error
	if o.PasswordStdin {
		pass, err = io.ReadAll(io.LimitReader(o.In, 64<<10))
	} else {
		read := o.ReadFile
		if read == nil {
			read = os.ReadFile
		}
		pass, err = read(o.PasswordFile)
	}
	if err != nil {
		return fmt.Errorf("read the password: %w", err)
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	ps := &api.PullSecret{
		Metadata: api.ObjectMeta{Name: name, Namespace: c.Namespace()},
		Spec:     api.PullSecretSpec{Registry: o.Registry, Username: o.Username, Password: strings.TrimRight(string(pass), "\r\n")},
	}
	if err := api.ValidatePullSecret(ps); err != nil {
		var fe api.FieldErrors
		errors.As(err, &fe)
		return describeAPIErrorFlags("pull secret", name, api.Invalid(api.KindPullSecret, name, fe), pullSecretFlags)
	}
	key := api.Key{Namespace: c.Namespace(), Name: name}
	verb := "created"
	cur, err := client.Get[api.PullSecret](ctx, c, key)
	switch {
	case err == nil:
		verb = "replaced"
		ps.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
		err = c.Do(ctx, http.MethodPut, client.ObjectPath[api.PullSecret](key), ps, nil)
	case errors.Is(err, api.ErrNotFound):
		err = c.Do(ctx, http.MethodPost, client.CollectionPath[api.PullSecret](c.Namespace()), ps, nil)
	}
	if err != nil {
		return describeAPIErrorFlags("pull secret", name, err, pullSecretFlags)
	}
	fmt.Fprintf(o.Out, "pull secret %q %s: namespace %s pulls from %s with it\n", name, verb, c.Namespace(), o.Registry)
	return nil
}

// pullSecretFlags maps a pull secret's fields to set's flags.
var pullSecretFlags = map[string]string{
	"spec.registry": "--registry",
	"spec.username": "--username",
	"spec.password": "the password",
}

func runPullSecretLs(ctx context.Context, o *PullSecretOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	l, err := client.List[api.PullSecret](ctx, c, c.Namespace(), nil)
	if err != nil {
		return describeAPIError("pull secrets", c.Namespace(), err)
	}
	if o.Output != outTable {
		for i := range l.Items {
			l.Items[i].Spec.Password = "" // never printed
		}
		return printStructured(o.Out, o.Output, l.Items)
	}
	t := newTable(o.Out, "NAME", "REGISTRY", "USERNAME", "AGE")
	now := o.Now()
	for _, p := range l.Items {
		t.row(p.Metadata.Name, p.Spec.Registry, p.Spec.Username, age(now, p.Metadata.CreationTimestamp))
	}
	return t.flush()
}

func runPullSecretRm(ctx context.Context, o *PullSecretOptions) error {
	for _, n := range o.Names {
		if err := api.ValidateName(n); err != nil {
			return fmt.Errorf("pull secret %q: name %s", n, api.NameRule)
		}
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	for _, n := range o.Names {
		if err := client.Delete[api.PullSecret](ctx, c, api.Key{Namespace: c.Namespace(), Name: n}); err != nil {
			return describeAPIError("pull secret", n, err)
		}
		fmt.Fprintf(o.Out, "pull secret %q deleted\n", n)
	}
	return nil
}
