package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(newHandler("replica-1"))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/", http.StatusOK, "hello from surge\nhost: replica-1\n"},
		{"/healthz", http.StatusOK, "ok\n"},
		{"/nope", http.StatusNotFound, "404 page not found\n"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || string(b) != tc.body {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
	}
}
