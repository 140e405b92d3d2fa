package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TestReadVerbsGolden pins the output of ls, describe and revisions in
// every format against testdata/VERB.FORMAT.golden.
func TestReadVerbsGolden(t *testing.T) {
	f := seededFake(t)
	verbs := []struct {
		name string
		run  func(ctx context.Context, s Streams, output string) error
	}{
		{"ls", func(ctx context.Context, s Streams, output string) error {
			return runLs(ctx, &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: output})
		}},
		{"ls-all-namespaces", func(ctx context.Context, s Streams, output string) error {
			return runLs(ctx, &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: output, AllNamespaces: true})
		}},
		{"describe-hello", func(ctx context.Context, s Streams, output string) error {
			return runDescribe(ctx, &DescribeOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: output, Name: "hello"})
		}},
		{"describe-world", func(ctx context.Context, s Streams, output string) error {
			return runDescribe(ctx, &DescribeOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: output, Name: "world"})
		}},
		{"revisions-hello", func(ctx context.Context, s Streams, output string) error {
			return runRevisions(ctx, &RevisionsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: output, Name: "hello"})
		}},
	}
	for _, v := range verbs {
		for _, output := range []string{outTable, outJSON, outYAML} {
			name := v.name + "." + output
			t.Run(name, func(t *testing.T) {
				s, out, errb := testStreams()
				if err := v.run(t.Context(), s, output); err != nil {
					t.Fatalf("%s -o %s: %v", v.name, output, err)
				}
				if errb.Len() > 0 {
					t.Errorf("stderr = %q, want nothing", errb)
				}
				golden(t, name, out.Bytes())
			})
		}
	}
}

// TestReadVerbsRejectOutput checks that a bad -o is a usage error found
// before any request.
func TestReadVerbsRejectOutput(t *testing.T) {
	f := newFakeAPI(t)
	s, _, _ := testStreams()
	for name, err := range map[string]error{
		"ls":        runLs(t.Context(), &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: "xml"}),
		"describe":  runDescribe(t.Context(), &DescribeOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: "wide", Name: "hello"}),
		"revisions": runRevisions(t.Context(), &RevisionsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: "", Name: "hello"}),
	} {
		if !isUsage(err) {
			t.Errorf("%s with a bad -o: error %v, want a usage error", name, err)
		}
	}
	if n := len(f.paths(http.MethodGet)); n != 0 {
		t.Errorf("the fake got %d requests, want none", n)
	}
}

func TestLsEmpty(t *testing.T) {
	f := newFakeAPI(t)
	for _, tt := range []struct{ output, want string }{
		{outTable, "NAME   URL   REVISION   READY   RPS   IMAGE   AGE\n"},
		{outJSON, "[]\n"},
		{outYAML, "[]\n"},
	} {
		s, out, _ := testStreams()
		if err := runLs(t.Context(), &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: tt.output}); err != nil {
			t.Fatalf("ls -o %s: %v", tt.output, err)
		}
		if got := out.String(); got != tt.want {
			t.Errorf("ls -o %s of no functions = %q, want %q", tt.output, got, tt.want)
		}
	}
}

// TestReadVerbsRequests pins the routes each read verb calls.
func TestReadVerbsRequests(t *testing.T) {
	tests := []struct {
		name string
		run  func(ctx context.Context, f *fakeAPI, s Streams) error
		want []string
	}{
		{"ls", func(ctx context.Context, f *fakeAPI, s Streams) error {
			return runLs(ctx, &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: outTable})
		}, []string{"/v1/namespaces/default/functions", "/v1/namespaces/default/scales", "/v1/stats"}},
		{"ls -A", func(ctx context.Context, f *fakeAPI, s Streams) error {
			return runLs(ctx, &LsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: outTable, AllNamespaces: true})
		}, []string{"/v1/functions", "/v1/scales", "/v1/stats"}},
		{"describe", func(ctx context.Context, f *fakeAPI, s Streams) error {
			return runDescribe(ctx, &DescribeOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: outTable, Name: "hello"})
		}, []string{
			"/v1/namespaces/default/functions/hello",
			"/v1/namespaces/default/traffic/hello",
			"/v1/namespaces/default/rollouts/hello",
			"/v1/namespaces/default/revisions?function=hello",
			"/v1/namespaces/default/scales?function=hello",
			"/v1/namespaces/default/replicas?function=hello",
			"/v1/namespaces/default/replicas/hello-00003-j8k9l/log",
		}},
		{"revisions", func(ctx context.Context, f *fakeAPI, s Streams) error {
			return runRevisions(ctx, &RevisionsOptions{Streams: s, NewClient: f.newClient, Now: fixedNow, Output: outTable, Name: "hello"})
		}, []string{
			"/v1/namespaces/default/functions/hello",
			"/v1/namespaces/default/revisions?function=hello",
			"/v1/namespaces/default/traffic/hello",
			"/v1/namespaces/default/scales?function=hello",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seededFake(t)
			s, _, _ := testStreams()
			if err := tt.run(t.Context(), f, s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, f.paths(http.MethodGet)); diff != "" {
				t.Errorf("GET requests (-want +got):\n%s", diff)
			}
			if other := len(f.paths(http.MethodPut)) + len(f.paths(http.MethodDelete)); other != 0 {
				t.Errorf("a read verb wrote %d times", other)
			}
		})
	}
}

func TestNodesTable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/nodes":
			writeFakeJSON(w, http.StatusOK, api.List[api.Node]{Items: []api.Node{{
				Metadata: api.ObjectMeta{Name: "node-a", CreationTimestamp: testNow.Add(-time.Hour)},
				Spec:     api.NodeSpec{PodSubnet: "10.244.0.0/24"},
				Status: api.NodeStatus{Address: "192.0.2.10", State: api.NodeAlive, LastSeen: testNow.Add(-3 * time.Second),
					Allocatable: api.NodeResources{CPU: "1900m", Memory: "3Gi"}},
			}}})
		case "/v1/replicas":
			writeFakeJSON(w, http.StatusOK, api.List[api.Replica]{Items: []api.Replica{
				{Spec: api.ReplicaSpec{NodeName: "node-a"}}, {Spec: api.ReplicaSpec{NodeName: "node-a"}}}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	o := &NodesOptions{Streams: Streams{Out: &out, Err: io.Discard}, Now: fixedNow, Output: "table",
		NewClient: func() (*client.Client, error) { return client.New(&client.Config{Server: srv.URL, Token: "t"}) }}
	if err := runNodes(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	want := "NAME     STATE   ADDRESS      SUBNET          CPU     MEMORY   REPLICAS   LAST SEEN   AGE\n" +
		"node-a   alive   192.0.2.10   10.244.0.0/24   1900m   3Gi      2          3s ago      60m\n"
	if out.String() != want {
		t.Errorf("nodes table:\n%s\nwant:\n%s", out.String(), want)
	}
}
