package apiserver

import (
	"context"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
)

// Redacted stands in for a value the reader may not see: an environment
// variable's, a pull secret's password.
const Redacted = "(redacted)"

// readsSecrets reports whether the request's principal may read a
// function's environment: admins, and nodes (which read only the
// revisions of the replicas they run, see nodeReadsRevision, and no
// function). Viewers and gateways see the names of the variables, not
// their values.
func readsSecrets(ctx context.Context) bool {
	switch principal(ctx).Role {
	case auth.RoleAdmin, auth.RoleNode:
		return true
	}
	return false
}

// redactEnv blanks every value of env that is not empty.
func redactEnv(env []api.EnvVar) {
	for i := range env {
		if env[i].Value != "" {
			env[i].Value = Redacted
		}
	}
}

// redactFunction blanks a function's environment values for readers who
// may not see them, in every answer (get, list, watch).
func redactFunction(ctx context.Context, f *api.Function) {
	if !readsSecrets(ctx) {
		redactEnv(f.Spec.Env)
	}
}

// redactRevision blanks the environment values of a revision's template
// for readers who may not see them.
func redactRevision(ctx context.Context, r *api.Revision) {
	if !readsSecrets(ctx) {
		redactEnv(r.Spec.Template.Env)
	}
}
