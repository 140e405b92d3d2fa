package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSleeps(t *testing.T) {
	for _, tc := range []struct {
		env   map[string]string
		query string
		code  int
		body  string
	}{
		{nil, "?ms=20", http.StatusOK, "slept 20ms\n"},
		{nil, "", http.StatusOK, "slept 0s\n"},
		{nil, "?ms=abc", http.StatusBadRequest, "ms=\"abc\": want milliseconds from 0 to 60000\n"},
		{nil, "?ms=60001", http.StatusBadRequest, "ms=\"60001\": want milliseconds from 0 to 60000\n"},
		{map[string]string{"SLEEP_MS": "30"}, "", http.StatusOK, "slept 30ms\n"},
		{map[string]string{"SLEEP_MS": "30"}, "?ms=1", http.StatusOK, "slept 1ms\n"},
		{map[string]string{"STATUS": "500"}, "", http.StatusInternalServerError, "slept 0s\n"},
	} {
		h, err := configure(func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		resp, err := http.Get(srv.URL + "/" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != tc.code || string(b) != tc.body {
			t.Errorf("%v GET /%s = %d %q, want %d %q", tc.env, tc.query, resp.StatusCode, b, tc.code, tc.body)
		}
	}
}

func TestConfigureRejects(t *testing.T) {
	for _, env := range []map[string]string{{"SLEEP_MS": "soon"}, {"SLEEP_MS": "-1"}, {"STATUS": "99"}, {"STATUS": "ok"}} {
		if _, err := configure(func(k string) string { return env[k] }); err == nil {
			t.Errorf("configure(%v) took it", env)
		}
	}
}
