package apiserver

import (
	"context"
	"fmt"
	"net/http"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/store"
)

// createFunction is POST: it fails when the function exists.
func (s *Server) createFunction(ctx context.Context, f *api.Function) (*api.Function, int, error) {
	res, err := s.cfg.Store.PutFunction(ctx, f, store.CreateOnly)
	if err != nil {
		return nil, 0, err
	}
	return res.Function, http.StatusCreated, nil
}

// replaceFunction is PUT: it creates the function when it does not exist
// and the request carries no resourceVersion, so that `surge deploy` is one
// idempotent call. The answer is 201 when it created the function.
func (s *Server) replaceFunction(ctx context.Context, f *api.Function) (*api.Function, int, error) {
	mode := store.CreateOrReplace
	if f.Metadata.ResourceVersion != "" {
		mode = store.ReplaceOnly
	}
	res, err := s.cfg.Store.PutFunction(ctx, f, mode)
	if err != nil {
		return nil, 0, err
	}
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

func validateNode(n *api.Node) error {
	if err := api.ValidateName(n.Metadata.Name); err != nil {
		return api.FieldErrors{{Field: "metadata.name", Message: fmt.Sprintf("%q %s", n.Metadata.Name, api.NameRule)}}
	}
	return nil
}
