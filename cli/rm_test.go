package cli

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

func TestRm(t *testing.T) {
	tests := []struct {
		name        string
		names       []string
		wantErr     string
		wantOut     string
		wantDeletes []string
	}{
		{
			name:        "two",
			names:       []string{"hello", "world"},
			wantOut:     "function \"hello\" deleted\nfunction \"world\" deleted\n",
			wantDeletes: []string{"/v1/namespaces/default/functions/hello", "/v1/namespaces/default/functions/world"},
		},
		{
			// Every name is checked before anything is deleted.
			name:    "bad name deletes nothing",
			names:   []string{"hello", "Bad_Name"},
			wantErr: `function "Bad_Name": name ` + api.NameRule,
		},
		{
			// Deletes stop at the first failure; what was deleted is said.
			name:        "stops at a missing one",
			names:       []string{"hello", "nosuch", "world"},
			wantErr:     "function \"nosuch\" not found: `surge ls` lists them",
			wantOut:     "function \"hello\" deleted\n",
			wantDeletes: []string{"/v1/namespaces/default/functions/hello", "/v1/namespaces/default/functions/nosuch"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seededFake(t)
			s, out, _ := testStreams()
			err := runRm(t.Context(), &RmOptions{Streams: s, NewClient: f.newClient, Names: tt.names})
			if got := errString(err); got != tt.wantErr {
				t.Errorf("error = %q, want %q", got, tt.wantErr)
			}
			if got := out.String(); got != tt.wantOut {
				t.Errorf("stdout = %q, want %q", got, tt.wantOut)
			}
			if diff := cmp.Diff(tt.wantDeletes, f.paths(http.MethodDelete)); diff != "" {
				t.Errorf("DELETE requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	f := newFakeAPI(t)
	tests := []struct {
		name      string
		opts      VersionOptions
		wantLines []string
	}{
		{"client only", VersionOptions{Version: "v1.2.3", ClientOnly: true, NewClient: f.newClient},
			[]string{"client: v1.2.3"}},
		{"with server", VersionOptions{Version: "v1.2.3", NewClient: f.newClient},
			[]string{"client: v1.2.3", "server: v9.9.9-fake (" + f.URL + ")"}},
		{"no client config", VersionOptions{Version: "v1.2.3", NewClient: func() (*client.Client, error) {
			return nil, errors.New("no client config at /x")
		}}, []string{"client: v1.2.3", "server: unknown (no client config at /x)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, out, _ := testStreams()
			tt.opts.Streams = s
			if err := runVersion(t.Context(), &tt.opts); err != nil {
				t.Fatalf("runVersion: %v", err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != len(tt.wantLines) {
				t.Fatalf("output %q, want %d lines", out, len(tt.wantLines))
			}
			for i, want := range tt.wantLines {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], want)
				}
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
