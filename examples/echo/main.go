// Command echo is a Surge function that answers every request with the
// request itself, as JSON: method, path, query, headers and body. It shows
// what reaches a replica through the gateway.
package main

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

// maxBody bounds the body echoed back.
const maxBody = 1 << 20

// request is what echo answers.
type request struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   map[string][]string `json:"query,omitempty"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

func main() { serve.Run("echo", newHandler()) }

func newHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "body too large: at most 1 MiB is echoed", http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Headers: r.Header, Body: string(body)})
	})
}
