// Command sleep is a Surge function that takes its time: GET /?ms=N
// answers after N milliseconds (at most a minute), or when the caller
// gives up. It makes requests that are in flight long enough to watch the
// autoscaler add replicas for concurrency.
//
// Its environment makes a revision worse, to watch a canary roll back:
// SLEEP_MS is the sleep of a request without ?ms= (default 0), and STATUS
// the status code of every answer (default 200).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

// maxSleep bounds one request's sleep.
const maxSleep = time.Minute

func main() {
	h, err := configure(os.Getenv)
	if err != nil {
		log.Fatalf("sleep: %v", err)
	}
	serve.Run("sleep", h)
}

// configure reads SLEEP_MS and STATUS.
func configure(getenv func(string) string) (http.Handler, error) {
	def, status := time.Duration(0), http.StatusOK
	if s := getenv("SLEEP_MS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || time.Duration(n)*time.Millisecond > maxSleep {
			return nil, fmt.Errorf("SLEEP_MS=%q: want milliseconds from 0 to %d", s, maxSleep.Milliseconds())
		}
		def = time.Duration(n) * time.Millisecond
	}
	if s := getenv("STATUS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 200 || n > 599 {
			return nil, fmt.Errorf("STATUS=%q: want an HTTP status code from 200 to 599", s)
		}
		status = n
	}
	return newHandler(def, status), nil
}

// newHandler sleeps def for a request without ?ms=, and answers status.
func newHandler(def time.Duration, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := millis(r, def, maxSleep)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			w.WriteHeader(status)
			fmt.Fprintf(w, "slept %s\n", d)
		case <-r.Context().Done():
		}
	})
}

// millis reads ?ms= as a duration: def when absent, at most limit.
func millis(r *http.Request, def, limit time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get("ms")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || time.Duration(n)*time.Millisecond > limit {
		return 0, fmt.Errorf("ms=%q: want milliseconds from 0 to %d", s, limit.Milliseconds())
	}
	return time.Duration(n) * time.Millisecond, nil
}
