package api_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
)

func TestErrorIs(t *testing.T) {
	sentinels := []error{
		api.ErrNotFound, api.ErrConflict, api.ErrAlreadyExist, api.ErrGone,
		api.ErrInvalid, api.ErrUnauthorized, api.ErrForbidden,
	}
	tests := []struct {
		name string
		err  *api.Error
		want error // the one sentinel it matches; nil for none
	}{
		{"404", api.NotFound(api.KindFunction, "hello"), api.ErrNotFound},
		{"404 no route", api.NewError(http.StatusNotFound, api.ReasonNotFound, "no route"), api.ErrNotFound},
		{"409 conflict", api.NewError(http.StatusConflict, api.ReasonConflict, "changed"), api.ErrConflict},
		{"409 already exists", api.NewError(http.StatusConflict, api.ReasonAlreadyExists, "exists"), api.ErrAlreadyExist},
		{"409 other reason", api.NewError(http.StatusConflict, "Other", "?"), nil},
		{"410", api.NewError(http.StatusGone, api.ReasonGone, "compacted"), api.ErrGone},
		{"422", api.Invalid(api.KindFunction, "hello", api.FieldErrors{{Field: "spec.port", Message: "bad"}}), api.ErrInvalid},
		{"400", api.BadRequest("not JSON"), api.ErrInvalid},
		{"401", api.NewError(http.StatusUnauthorized, api.ReasonUnauthorized, "no token"), api.ErrUnauthorized},
		{"403", api.NewError(http.StatusForbidden, api.ReasonForbidden, "reader"), api.ErrForbidden},
		{"500", api.NewError(http.StatusInternalServerError, api.ReasonInternal, "boom"), nil},
		{"503", api.NewError(http.StatusServiceUnavailable, api.ReasonUnavailable, "later"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("get function hello: %w", tt.err)
			for _, s := range sentinels {
				want := s == tt.want
				if got := errors.Is(tt.err, s); got != want {
					t.Errorf("errors.Is(%d %s, %q) = %v, want %v", tt.err.Code, tt.err.Reason, s, got, want)
				}
				if got := errors.Is(wrapped, s); got != want {
					t.Errorf("errors.Is(wrapped %d %s, %q) = %v, want %v", tt.err.Code, tt.err.Reason, s, got, want)
				}
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"not found", api.NotFound(api.KindFunction, "hello"), `function "hello" not found`},
		{"with field", &api.Error{Code: 400, Field: "spec.port", Message: "must be a number"}, "spec.port: must be a number"},
		{"field errors", api.FieldErrors{{Field: "spec.port", Message: "a"}, {Field: "spec.timeout", Message: "b"}},
			"spec.port: a; spec.timeout: b"},
		{"bad request", api.BadRequest("body is %s", "empty"), "body is empty"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%s: Error() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestInvalid(t *testing.T) {
	errs := api.FieldErrors{
		{Field: "spec.port", Message: "must be between 1 and 65535"},
		{Field: "spec.timeout", Message: "bad"},
		{Field: "spec.image", Message: "is required"},
	}
	tests := []struct {
		name string
		errs api.FieldErrors
		want *api.Error
	}{
		{"several", errs, &api.Error{
			Code: http.StatusUnprocessableEntity, Reason: api.ReasonInvalid,
			Field: "spec.port", Message: "must be between 1 and 65535 (and 2 more)", Causes: errs,
		}},
		{"one", errs[:1], &api.Error{
			Code: http.StatusUnprocessableEntity, Reason: api.ReasonInvalid,
			Field: "spec.port", Message: "must be between 1 and 65535", Causes: errs[:1],
		}},
		{"none", nil, &api.Error{
			Code: http.StatusUnprocessableEntity, Reason: api.ReasonInvalid, Message: `function "hello" is invalid`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, api.Invalid(api.KindFunction, "hello", tt.errs)); diff != "" {
				t.Errorf("Invalid (-want +got):\n%s", diff)
			}
		})
	}
}
