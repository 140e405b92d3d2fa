package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// createFunction is POST: it fails when the function exists.
func (s *Server) createFunction(ctx context.Context, f *api.Function) (*api.Function, int, error) {
	pin, err := s.resolveImage(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	res, err := s.cfg.Store.PutFunction(ctx, f, store.CreateOnly, pin...)
	if err != nil {
		return nil, 0, err
	}
	s.withURL(res.Function)
	return res.Function, http.StatusCreated, nil
}

// resolveImage asks Config.ResolveImage for the digest f's image names now,
// for the revision to pin. A failure to resolve is no error: the revision
// runs the reference as written; only an *api.Error (a pull secret that
// does not exist) refuses the deploy.
func (s *Server) resolveImage(ctx context.Context, f *api.Function) ([]store.PutOption, error) {
	if s.cfg.ResolveImage == nil {
		return nil, nil
	}
	d, err := s.cfg.ResolveImage(ctx, f)
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return nil, ae
	case err != nil:
		s.cfg.Log.Info("image not pinned", "function", api.KeyOf(f).String(), "image", f.Spec.Image, "err", err)
		return nil, nil
	case d == "":
		return nil, nil
	}
	return []store.PutOption{store.WithImageDigest(d)}, nil
}

// withURL fills in where the gateway serves f, when the server knows.
func (s *Server) withURL(f *api.Function) {
	if s.cfg.FunctionURL != nil && f != nil {
		f.Status.URL = s.cfg.FunctionURL(api.KeyOf(f))
	}
}

// showFunctions fills in the URL of each function.
func (s *Server) showFunctions(_ context.Context, fns []api.Function) error {
	for i := range fns {
		s.withURL(&fns[i])
	}
	return nil
}

// replaceFunction is PUT: it creates the function when it does not exist
// and the request carries no resourceVersion, so that `surge deploy` is one
// idempotent call. The answer is 201 when it created the function.
func (s *Server) replaceFunction(ctx context.Context, f *api.Function) (*api.Function, int, error) {
	mode := store.CreateOrReplace
	if f.Metadata.ResourceVersion != "" {
		mode = store.ReplaceOnly
	}
	pin, err := s.resolveImage(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	res, err := s.cfg.Store.PutFunction(ctx, f, mode, pin...)
	if err != nil {
		return nil, 0, err
	}
	s.withURL(res.Function)
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	return res.Function, code, nil
}

// replaceTraffic checks that every target names an existing revision of
// the function before writing.
func (s *Server) replaceTraffic(ctx context.Context, t *api.Traffic) (*api.Traffic, int, error) {
	revs, _, err := store.List[api.Revision](ctx, s.cfg.Store, store.Scope{Namespace: t.Metadata.Namespace, Function: t.Metadata.Name})
	if err != nil {
		return nil, 0, err
	}
	have := make(map[string]bool, len(revs))
	for _, r := range revs {
		have[r.Metadata.Name] = true
	}
	var errs api.FieldErrors
	for i, tt := range t.Spec.Targets {
		if !have[tt.Revision] {
			errs = append(errs, api.FieldError{Field: fmt.Sprintf("spec.targets[%d].revision", i),
				Message: fmt.Sprintf("revision %q does not exist: `surge revisions %s` lists them", tt.Revision, t.Metadata.Name)})
		}
	}
	if len(errs) > 0 {
		return nil, 0, api.Invalid(api.KindTraffic, t.Metadata.Name, errs)
	}
	out, err := store.Update(ctx, s.cfg.Store, t)
	return out, http.StatusOK, err
}

func validateReplica(r *api.Replica) error {
	var errs api.FieldErrors
	fn, _, ok := api.ParseRevisionName(r.Spec.Revision)
	switch {
	case !ok:
		errs = append(errs, api.FieldError{Field: "spec.revision", Message: fmt.Sprintf("%q is not a revision name like \"hello-00001\"", r.Spec.Revision)})
	case fn != r.Spec.Function:
		errs = append(errs, api.FieldError{Field: "spec.function", Message: fmt.Sprintf("%q does not own revision %q", r.Spec.Function, r.Spec.Revision)})
	}
	if _, ok := store.EtcdKey(api.ReplicaKind, api.KeyOf(r)); !ok || len(r.Metadata.Name) <= len(r.Spec.Revision) || r.Metadata.Name[:len(r.Spec.Revision)] != r.Spec.Revision {
		errs = append(errs, api.FieldError{Field: "metadata.name", Message: fmt.Sprintf("%q must be the revision's name, '-' and a suffix", r.Metadata.Name)})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func validateNode(n *api.Node) error { return api.ValidateNode(n) }

// redactPullSecret blanks a pull secret's password for every reader but
// admins and nodes (which pull with it; a node reads only those of the
// namespaces it runs replicas of, see nodeReadsPullSecrets).
func redactPullSecret(ctx context.Context, ps *api.PullSecret) {
	switch principal(ctx).Role {
	case auth.RoleAdmin, auth.RoleNode:
		return
	}
	if ps.Spec.Password != "" {
		ps.Spec.Password = Redacted
	}
}
