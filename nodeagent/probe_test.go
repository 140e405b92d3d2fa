package nodeagent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// TestProbeNeverFollowsRedirects is the attack of a replica that answers
// its readiness probe with a redirect to an address only the node's host
// network reaches (a metadata service, a node port): the agent must not
// send it a request. A test server stands in for that address, and counts
// what reaches it.
func TestProbeNeverFollowsRedirects(t *testing.T) {
	for _, code := range []int{
		http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect,
	} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			var target, asked atomic.Int64
			watched := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				target.Add(1)
			}))
			defer watched.Close()
			replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				http.Redirect(w, r, watched.URL+"/latest/meta-data/", code)
			}))
			defer replica.Close()
			host, port, err := net.SplitHostPort(replica.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			p, _ := strconv.Atoi(port)

			// A redirect is the replica's answer: it serves HTTP, as
			// Kubernetes' httpGet judges a 3xx. It is never followed.
			if err := probeOnce(testContext(t), host, int32(p), "/healthz"); err != nil {
				t.Errorf("probe of a replica answering %d: %v, want it to pass", code, err)
			}
			if n := target.Load(); n != 0 {
				t.Fatalf("the probe followed a %d redirect: %d requests reached its target", code, n)
			}
			if n := asked.Load(); n != 1 {
				t.Errorf("one probe sent %d requests to the replica, want 1", n)
			}
		})
	}
}

// TestProbeStatuses: below 400 passes, from 400 fails.
func TestProbeStatuses(t *testing.T) {
	for _, tt := range []struct {
		code int
		pass bool
	}{{200, true}, {204, true}, {304, true}, {399, true}, {400, false}, {404, false}, {500, false}, {503, false}} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.code)
			}))
			defer replica.Close()
			host, port, _ := net.SplitHostPort(replica.Listener.Addr().String())
			p, _ := strconv.Atoi(port)
			err := probeOnce(testContext(t), host, int32(p), "/ready")
			if (err == nil) != tt.pass {
				t.Errorf("probe of a replica answering %d: %v, want pass %v", tt.code, err, tt.pass)
			}
		})
	}
}

// TestProbeStaysOnTheReplicasAddress: a path that would make the probe's
// URL name another host (one the API rejects today, stored before the
// rule) fails the probe and sends nothing.
func TestProbeStaysOnTheReplicasAddress(t *testing.T) {
	var target atomic.Int64
	watched := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target.Add(1)
	}))
	defer watched.Close()
	w := watched.Listener.Addr().String()
	for _, path := range []string{"@" + w + "/", "@" + w} {
		if err := probeOnce(testContext(t), "127.0.0.1", 1, path); err == nil {
			t.Errorf("probe with path %q passed", path)
		}
	}
	if n := target.Load(); n != 0 {
		t.Fatalf("%d requests reached another host", n)
	}
}
