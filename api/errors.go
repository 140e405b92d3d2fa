package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors, matched with errors.Is against an *Error of the same code.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrAlreadyExist = errors.New("already exists")
	ErrGone         = errors.New("resource version compacted")
	ErrInvalid      = errors.New("invalid")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
)

// Reasons carried by Error.Reason.
const (
	ReasonNotFound      = "NotFound"
	ReasonConflict      = "Conflict"
	ReasonAlreadyExists = "AlreadyExists"
	ReasonGone          = "Gone"
	ReasonInvalid       = "Invalid"
	ReasonBadRequest    = "BadRequest"
	ReasonUnauthorized  = "Unauthorized"
	ReasonForbidden     = "Forbidden"
	ReasonTooLarge      = "RequestEntityTooLarge"
	ReasonInternal      = "InternalError"
	ReasonMethod        = "MethodNotAllowed"
	ReasonUnavailable   = "ServiceUnavailable"
)

// FieldError says what is wrong with one field.
type FieldError struct {
	// Field is the JSON path of the field, e.g. "spec.port".
	Field string `json:"field"`
	// Message says what is wrong, e.g. "must be between 1 and 65535".
	Message string `json:"error"`
}

// Error implements error.
func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// FieldErrors is every problem found in one object.
type FieldErrors []FieldError

// Error implements error.
func (fe FieldErrors) Error() string {
	parts := make([]string, len(fe))
	for i, e := range fe {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Error is the JSON body of every non-2xx API answer, and the error the
// client returns for one.
type Error struct {
	// Code is the HTTP status.
	Code int `json:"code"`
	// Reason is a machine-readable word, e.g. "Invalid".
	Reason string `json:"reason"`
	// Message says what went wrong, for a person.
	Message string `json:"error"`
	// Field names the first offending field of an invalid object.
	Field string `json:"field,omitempty"`
	// Causes lists every offending field.
	Causes FieldErrors `json:"causes,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Is matches the sentinel errors of this package by HTTP status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrConflict:
		return e.Code == http.StatusConflict && e.Reason == ReasonConflict
	case ErrAlreadyExist:
		return e.Code == http.StatusConflict && e.Reason == ReasonAlreadyExists
	case ErrGone:
		return e.Code == http.StatusGone
	case ErrInvalid:
		return e.Code == http.StatusUnprocessableEntity || e.Code == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Code == http.StatusUnauthorized
	case ErrForbidden:
		return e.Code == http.StatusForbidden
	}
	return false
}

// NewError makes an Error with a formatted message.
func NewError(code int, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// NotFound is the error for a missing object.
func NotFound(kind, name string) *Error {
	return NewError(http.StatusNotFound, ReasonNotFound, "%s %q not found", strings.ToLower(kind), name)
}

// Invalid is the error for an object that failed validation; it names the
// first offending field and lists them all.
func Invalid(kind, name string, errs FieldErrors) *Error {
	e := &Error{Code: http.StatusUnprocessableEntity, Reason: ReasonInvalid, Causes: errs}
	if len(errs) > 0 {
		e.Field = errs[0].Field
		e.Message = errs[0].Message
		if len(errs) > 1 {
			e.Message += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
	} else {
		e.Message = fmt.Sprintf("%s %q is invalid", strings.ToLower(kind), name)
	}
	return e
}

// BadRequest is the error for a body that is not a well-formed object.
func BadRequest(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, ReasonBadRequest, format, args...)
}
