package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSleeps(t *testing.T) {
	srv := httptest.NewServer(newHandler())
	defer srv.Close()
	for _, tc := range []struct {
		query string
		code  int
		body  string
	}{
		{"?ms=20", http.StatusOK, "slept 20ms\n"},
		{"", http.StatusOK, "slept 0s\n"},
		{"?ms=abc", http.StatusBadRequest, "ms=\"abc\": want milliseconds from 0 to 60000\n"},
		{"?ms=60001", http.StatusBadRequest, "ms=\"60001\": want milliseconds from 0 to 60000\n"},
	} {
		resp, err := http.Get(srv.URL + "/" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || string(b) != tc.body {
			t.Errorf("GET /%s = %d %q, want %d %q", tc.query, resp.StatusCode, b, tc.code, tc.body)
		}
	}
}
