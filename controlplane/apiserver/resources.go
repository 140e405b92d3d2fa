package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// kindOps are the write operations a kind offers; a nil one is not served
// (405). validate runs before create and replace, after the name and
// namespace from the path are filled in.
type kindOps[T any] struct {
	validate func(*T) error
	create   func(ctx context.Context, obj *T) (*T, int, error)
	replace  func(ctx context.Context, obj *T) (*T, int, error)
	delete   func(ctx context.Context, key api.Key, resourceVersion string) error
	// status, when set, serves PUT .../NAME/status: it writes only the
	// status, keeping the stored spec (what agents report).
	status func(ctx context.Context, obj *T) (*T, error)
	// filter, when set, turns query parameters into a predicate on list
	// and watch results (e.g. ?node= for replicas).
	filter func(q url.Values) (func(*T) bool, error)
	// show, when set, completes what get and list answer with what is
	// kept apart from the objects (a node's lastSeen, from its lease).
	show func(ctx context.Context, objs []T) error
	// authorizeRead, when set, is asked before a get (key names the
	// object) or a list or watch (key.Name is empty); it refuses with a
	// 403 what the caller (principal(ctx)) may not read of the kind.
	authorizeRead func(ctx context.Context, key api.Key) error
	// redact, when set, blanks what the request's principal may not read
	// of an object (a pull secret's password), in every answer: get, list,
	// watch and writes.
	redact func(ctx context.Context, obj *T)
}

// registerKind mounts the list, watch, get, create, replace and delete
// routes of the kind of T, at paths made of its plural.
func registerKind[T any, P api.ObjectPtr[T]](s *Server, ops kindOps[T]) {
	k := api.KindOf[T, P]()
	res := k.Plural
	item := "/v1/" + res + "/{name}"
	coll := "/v1/" + res
	mayRead := func(w http.ResponseWriter, r *http.Request, key api.Key) bool {
		if ops.authorizeRead == nil {
			return true
		}
		if err := ops.authorizeRead(r.Context(), key); err != nil {
			writeError(w, s.cfg.Log, err)
			return false
		}
		return true
	}
	if k.Namespaced {
		s.handle("GET /v1/"+res, res, auth.Read, func(w http.ResponseWriter, r *http.Request) {
			if mayRead(w, r, api.Key{}) {
				listOrWatch[T, P](s, w, r, "", ops)
			}
		})
		coll = "/v1/namespaces/{ns}/" + res
		item = coll + "/{name}"
	}
	s.handle("GET "+coll, res, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("ns")
		if err := validNamespace(k, ns); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		if mayRead(w, r, api.Key{Namespace: ns}) {
			listOrWatch[T, P](s, w, r, ns, ops)
		}
	})
	s.handle("GET "+item, res, auth.Read, func(w http.ResponseWriter, r *http.Request) {
		key := api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
		if !mayRead(w, r, key) {
			return
		}
		obj, err := store.Get[T, P](r.Context(), s.cfg.Store, key)
		if err == nil && ops.show != nil {
			one := []T{*obj}
			err = ops.show(r.Context(), one)
			obj = &one[0]
		}
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		if ops.redact != nil {
			ops.redact(r.Context(), obj)
		}
		writeJSON(w, http.StatusOK, obj)
	})
	write := func(op func(context.Context, *T) (*T, int, error), nameFromPath bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if op == nil {
				writeError(w, s.cfg.Log, api.NewError(http.StatusMethodNotAllowed, api.ReasonMethod,
					"%s are written by the system, not through the API", res))
				return
			}
			var obj T
			if err := decodeBody(w, r, &obj); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			if err := fillMeta(k, P(&obj).GetMetadata(), r, nameFromPath); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			if ops.validate != nil {
				if err := ops.validate(&obj); err != nil {
					writeError(w, s.cfg.Log, invalid(k, P(&obj).GetMetadata().Name, err))
					return
				}
			}
			out, code, err := op(r.Context(), &obj)
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			if ops.redact != nil {
				ops.redact(r.Context(), out)
			}
			writeJSON(w, code, out)
		}
	}
	s.handle("POST "+coll, res, auth.Write, write(ops.create, false))
	s.handle("PUT "+item, res, auth.Write, write(ops.replace, true))
	if ops.status != nil {
		s.handle("PUT "+item+"/status", res, auth.Write, func(w http.ResponseWriter, r *http.Request) {
			var obj T
			if err := decodeBody(w, r, &obj); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			if err := fillMeta(k, P(&obj).GetMetadata(), r, true); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			out, err := ops.status(r.Context(), &obj)
			if err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
	}
	s.handle("DELETE "+item, res, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		if ops.delete == nil {
			writeError(w, s.cfg.Log, api.NewError(http.StatusMethodNotAllowed, api.ReasonMethod,
				"%s are deleted with their function", res))
			return
		}
		key := api.Key{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
		if k.Namespaced && key.Namespace == "" {
			key.Namespace = api.DefaultNamespace
		}
		if err := ops.delete(r.Context(), key, r.URL.Query().Get("resourceVersion")); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "name": r.PathValue("name")})
	})
}

// invalid wraps validation errors into the 422 answer.
func invalid(k api.Kind, name string, err error) error {
	var fe api.FieldErrors
	if errors.As(err, &fe) {
		return api.Invalid(k.Name, name, fe)
	}
	return err
}

func validNamespace(k api.Kind, ns string) error {
	if k.Namespaced && ns != "" {
		if err := api.ValidateName(ns); err != nil {
			e := api.Invalid(k.Name, ns, api.FieldErrors{{Field: "metadata.namespace", Message: fmt.Sprintf("%q %s", ns, api.NameRule)}})
			return e
		}
	}
	return nil
}

// fillMeta takes the namespace and name from the path when the body leaves
// them out, and rejects a body that names another object than the path.
func fillMeta(k api.Kind, m *api.ObjectMeta, r *http.Request, nameFromPath bool) error {
	if k.Namespaced {
		ns := r.PathValue("ns")
		switch {
		case m.Namespace == "":
			m.Namespace = ns
		case m.Namespace != ns:
			return fieldError("metadata.namespace", "is %q but the path names namespace %q", m.Namespace, ns)
		}
	}
	if nameFromPath {
		name := r.PathValue("name")
		switch {
		case m.Name == "":
			m.Name = name
		case m.Name != name:
			return fieldError("metadata.name", "is %q but the path names %q", m.Name, name)
		}
	}
	return nil
}

func fieldError(field, format string, args ...any) *api.Error {
	e := api.BadRequest(format, args...)
	e.Field = field
	return e
}

func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// isFollow reports a log request that streams until the client leaves.
func isFollow(r *http.Request) bool {
	f := r.URL.Query().Get("follow")
	return f == "true" || f == "1"
}

// listOrWatch answers a list, or streams a watch when ?watch=true.
func listOrWatch[T any, P api.ObjectPtr[T]](s *Server, w http.ResponseWriter, r *http.Request, ns string, ops kindOps[T]) {
	k := api.KindOf[T, P]()
	keep := func(*T) bool { return true }
	if ops.filter != nil {
		f, err := ops.filter(r.URL.Query())
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		keep = f
	}
	scope := store.Scope{Namespace: ns}
	if fn := r.URL.Query().Get("function"); fn != "" {
		if !store.GroupedByFunction(k) || ns == "" {
			writeError(w, s.cfg.Log, api.BadRequest("?function= filters revisions, scales and replicas within a namespace"))
			return
		}
		if err := api.ValidateName(fn); err != nil {
			writeError(w, s.cfg.Log, fieldError("function", "%q %s", fn, api.NameRule))
			return
		}
		scope.Function = fn
	}
	if isWatch(r) {
		watch[T, P](s, w, r, scope, keep, ops.redact)
		return
	}
	items, rev, err := store.List[T, P](r.Context(), s.cfg.Store, scope)
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	kept := items[:0]
	for i := range items {
		if keep(&items[i]) {
			kept = append(kept, items[i])
		}
	}
	if ops.show != nil {
		if err := ops.show(r.Context(), kept); err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
	}
	if ops.redact != nil {
		for i := range kept {
			ops.redact(r.Context(), &kept[i])
		}
	}
	writeJSON(w, http.StatusOK, api.List[T]{ResourceVersion: strconv.FormatInt(rev, 10), Items: kept})
}

// watch streams one JSON event per line until the client goes away or the
// watch ends; an ending watch sends an ERROR event first, so the client
// knows to resume (or, for 410, to list again).
func watch[T any, P api.ObjectPtr[T]](s *Server, w http.ResponseWriter, r *http.Request, scope store.Scope, keep func(*T) bool, redact func(context.Context, *T)) {
	rev, err := store.ParseVersion(r.URL.Query().Get("resourceVersion"))
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	wt, err := store.Watch[T, P](r.Context(), s.cfg.Store, scope, rev)
	if err != nil {
		writeError(w, s.cfg.Log, err)
		return
	}
	defer wt.Stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	for {
		events, at, err := wt.Next()
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			var ae *api.Error
			if !errors.As(err, &ae) {
				s.cfg.Log.Warn("watch ended", "kind", api.KindOf[T, P]().Plural, "err", err)
				ae = api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "watch ended: resume from the last resourceVersion")
			}
			_ = enc.Encode(api.WatchEvent[*T]{Type: api.EventError, Error: ae})
			return
		}
		events = slices.DeleteFunc(events, func(e api.WatchEvent[*T]) bool { return !keep(e.Object) })
		if redact != nil {
			for _, e := range events {
				redact(r.Context(), e.Object)
			}
		}
		if len(events) == 0 {
			// Nothing the client asked for: still tell it how far it got.
			events = append(events, api.WatchEvent[*T]{Type: api.EventBookmark, ResourceVersion: strconv.FormatInt(at, 10)})
		}
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// createOnly and replaceOnly are the plain store writes, for kinds with no
// semantics of their own.
func createOnly[T any, P api.ObjectPtr[T]](s *Server) func(context.Context, *T) (*T, int, error) {
	return func(ctx context.Context, obj *T) (*T, int, error) {
		out, err := store.Create[T, P](ctx, s.cfg.Store, P(obj))
		return out, http.StatusCreated, err
	}
}

func replaceOnly[T any, P api.ObjectPtr[T]](s *Server) func(context.Context, *T) (*T, int, error) {
	return func(ctx context.Context, obj *T) (*T, int, error) {
		out, err := store.Update[T, P](ctx, s.cfg.Store, P(obj))
		return out, http.StatusOK, err
	}
}

func deleteOne[T any, P api.ObjectPtr[T]](s *Server) func(ctx context.Context, key api.Key, rv string) error {
	return func(ctx context.Context, key api.Key, rv string) error {
		return store.Delete[T, P](ctx, s.cfg.Store, key, rv)
	}
}

// keepStatus adapts a spec-only update.
func (s *Server) keepStatus(update func(context.Context, *store.Store, *api.Scale) (*api.Scale, error)) func(context.Context, *api.Scale) (*api.Scale, int, error) {
	return func(ctx context.Context, sc *api.Scale) (*api.Scale, int, error) {
		out, err := update(ctx, s.cfg.Store, sc)
		return out, http.StatusOK, err
	}
}
