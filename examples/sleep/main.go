// Command sleep is a Surge function that takes its time: GET /?ms=N
// answers after N milliseconds (at most a minute), or when the caller
// gives up. It makes requests that are in flight long enough to watch the
// autoscaler add replicas for concurrency.
package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

// maxSleep bounds one request's sleep.
const maxSleep = time.Minute

func main() { serve.Run("sleep", newHandler()) }

func newHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := millis(r, maxSleep)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fmt.Fprintf(w, "slept %s\n", d)
		case <-r.Context().Done():
		}
	})
}

// millis reads ?ms= as a duration: 0 when absent, at most limit.
func millis(r *http.Request, limit time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get("ms")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || time.Duration(n)*time.Millisecond > limit {
		return 0, fmt.Errorf("ms=%q: want milliseconds from 0 to %d", s, limit.Milliseconds())
	}
	return time.Duration(n) * time.Millisecond, nil
}
