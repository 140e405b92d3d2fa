package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TestLogsGoThroughTheAPI: surge logs reads each replica's log from the
// API; it sends its token to the API's origin and nowhere else, not even
// to the agent a node names.
func TestLogsGoThroughTheAPI(t *testing.T) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("surge logs called a node agent at %s, with %q", r.URL, r.Header.Get("Authorization"))
	}))
	defer agent.Close()
	var mu sync.Mutex
	var asked []string
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			writeFakeJSON(w, http.StatusUnauthorized, api.NewError(http.StatusUnauthorized, api.ReasonUnauthorized, "no"))
			return
		}
		switch {
		case r.URL.Path == "/v1/namespaces/default/functions/hello":
			writeFakeJSON(w, http.StatusOK, api.Function{Metadata: api.ObjectMeta{Name: "hello", Namespace: "default"}})
		case r.URL.Path == "/v1/namespaces/default/replicas":
			l := api.List[api.Replica]{Items: []api.Replica{
				{Metadata: api.ObjectMeta{Name: "hello-00001-aaaaa", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "n1"}},
				{Metadata: api.ObjectMeta{Name: "hello-00001-bbbbb", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001", NodeName: "n2"}},
				{Metadata: api.ObjectMeta{Name: "hello-00001-ccccc", Namespace: "default"}, Spec: api.ReplicaSpec{Function: "hello", Revision: "hello-00001"}},
			}}
			writeFakeJSON(w, http.StatusOK, l)
		case r.URL.Path == "/v1/nodes":
			// What a node could write: an agent URL of its choosing.
			_ = json.NewEncoder(w).Encode(api.List[api.Node]{Items: []api.Node{{Metadata: api.ObjectMeta{Name: "n1"}, Status: api.NodeStatus{AgentURL: agent.URL}}}})
		case strings.HasSuffix(r.URL.Path, "/log"):
			name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/namespaces/default/replicas/"), "/log")
			w.Write([]byte("started " + name + "\n"))
		default:
			writeFakeJSON(w, http.StatusNotFound, api.NotFound("route", r.URL.Path))
		}
	}))
	defer apiSrv.Close()
	newClient := func() (*client.Client, error) {
		return client.New(&client.Config{Server: apiSrv.URL, Token: fakeToken})
	}
	for _, follow := range []bool{false, true} {
		mu.Lock()
		asked = nil
		mu.Unlock()
		s, out, _ := testStreams()
		if err := runLogs(context.Background(), &LogsOptions{Streams: s, NewClient: newClient, Name: "hello", Follow: follow}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		slices.Sort(lines)
		if diff := cmp.Diff([]string{"[hello-00001-aaaaa] started hello-00001-aaaaa", "[hello-00001-bbbbb] started hello-00001-bbbbb"}, lines); diff != "" {
			t.Errorf("output (-want +got):\n%s", diff)
		}
		q := ""
		if follow {
			q = "?follow=true"
		}
		mu.Lock()
		got := slices.Sorted(slices.Values(asked))
		mu.Unlock()
		want := []string{
			"GET /v1/namespaces/default/functions/hello",
			"GET /v1/namespaces/default/replicas/hello-00001-aaaaa/log" + q,
			"GET /v1/namespaces/default/replicas/hello-00001-bbbbb/log" + q,
			"GET /v1/namespaces/default/replicas?function=hello",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("requests (-want +got):\n%s", diff)
		}
	}
}
