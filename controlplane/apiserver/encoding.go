package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/surgeplatform/surge/api"
)

// MaxBodyBytes bounds a request body. The largest object, a Function with
// 256 environment variables of 64 KiB in all, fits with room to spare.
const MaxBodyBytes = 1 << 20

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeError answers with the JSON error body, turning any error into an
// *api.Error. Errors that are not *api.Error are internal: their text is
// logged, and the client is told only that something failed.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
	case etcdUnavailable(err):
		// etcd is electing a leader, or this server's member is cut off
		// from the quorum: another server, or this one a moment later,
		// answers. The client fails over on a 503.
		log.Warn("etcd unavailable", "err", err)
		ae = api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "the store is unavailable for a moment (etcd is electing a leader or unreachable): try again")
	default:
		log.Error("internal error", "err", err)
		ae = api.NewError(http.StatusInternalServerError, api.ReasonInternal, "internal error: the server log has the details")
	}
	writeJSON(w, ae.Code, ae)
}

// etcdUnavailable reports whether err is etcd saying it cannot answer now
// (no leader, leader changed, request timed out: gRPC's Unavailable; or a
// proposal raft dropped while its leader moved, which reaches the
// in-process client as an Unknown status carrying raft's sentinel's text).
// A write that timed out may still have been applied: whoever retries it
// must be able to tell, as the store's guarded transactions can.
func etcdUnavailable(err error) bool {
	if errors.Is(err, raft.ErrProposalDropped) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		st := gs.GRPCStatus()
		return st.Code() == codes.Unavailable || st.Message() == raft.ErrProposalDropped.Error()
	}
	return false
}

// decodeBody reads one JSON object from the request into v. Unknown
// fields, trailing data, wrong types and oversized bodies are client
// errors, each naming what is wrong.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return api.NewError(http.StatusUnsupportedMediaType, api.ReasonBadRequest, "content type %q is not supported: send application/json", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return api.BadRequest("body has data after the JSON object: send exactly one object")
	}
	return nil
}

func decodeError(err error) error {
	if field, ok := api.IsDurationError(err); ok {
		var typ *json.UnmarshalTypeError
		errors.As(err, &typ)
		e := api.BadRequest("%s, got a JSON %s", api.DurationRule, typ.Value)
		e.Field = field
		return e
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return api.NewError(http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return api.BadRequest("body is empty: send a JSON object")
	case errors.As(err, &syn):
		return api.BadRequest("body is not valid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		e := api.BadRequest("must be a %s, got a JSON %s", jsonType(typ.Type.Kind().String()), typ.Value)
		e.Field = typ.Field
		return e
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		e := api.BadRequest("unknown field: check its spelling against the API reference")
		e.Field = f
		return e
	case errors.Is(err, io.ErrUnexpectedEOF):
		return api.BadRequest("body ends in the middle of the JSON object")
	}
	return api.BadRequest("body is not a valid object: %v", err)
}

func jsonType(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "whole number in range"
	case "float32", "float64":
		return "number"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "list"
	case "map", "struct":
		return "object"
	}
	return fmt.Sprint(goKind)
}
