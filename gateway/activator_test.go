package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// TestControlPlaneActivatorSendsTheDemand: an activation is a POST to the
// revision's Scale with the gateway's demand.
func TestControlPlaneActivatorSendsTheDemand(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a api.Activation
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &a); err != nil {
			t.Errorf("activation body %q: %v", b, err)
		}
		mu.Lock()
		got = append(got, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, a.Demand))
		mu.Unlock()
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	c, err := client.New(&client.Config{Server: srv.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	act := &ControlPlaneActivator{Client: c}
	act.Activate("default", "hello", "hello-00001", 500)
	act.Wait()
	want := []string{"POST /v1/namespaces/default/scales/hello-00001/activate 500"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
