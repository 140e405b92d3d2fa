package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestEchoesTheRequest(t *testing.T) {
	srv := httptest.NewServer(newHandler())
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/things?x=1", strings.NewReader(`{"a":1}`))
	req.Header.Set("X-Test", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got request
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Method != "POST" || got.Path != "/things" || got.Query["x"][0] != "1" || got.Headers["X-Test"][0] != "yes" || got.Body != `{"a":1}` {
		t.Errorf("echo = %+v", got)
	}
}
