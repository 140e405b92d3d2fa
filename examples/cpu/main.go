// Command cpu is a Surge function that burns CPU: GET /?ms=N hashes for N
// milliseconds of wall time (at most ten seconds) on one core, then says
// how much work it did. It loads a replica's CPU quota, to watch the
// autoscaler scale on requests per second and the cgroup limits at work.
package main

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

// maxBurn bounds one request's work.
const maxBurn = 10 * time.Second

func main() { serve.Run("cpu", newHandler()) }

func newHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := r.URL.Query().Get("ms")
		n, err := strconv.Atoi(s)
		if s == "" {
			n, err = 10, nil
		}
		if err != nil || n < 0 || time.Duration(n)*time.Millisecond > maxBurn {
			http.Error(w, fmt.Sprintf("ms=%q: want milliseconds from 0 to %d", s, maxBurn.Milliseconds()), http.StatusBadRequest)
			return
		}
		hashes := burn(r, time.Duration(n)*time.Millisecond)
		fmt.Fprintf(w, "burned %dms of cpu: %d hashes\n", n, hashes)
	})
}

// burn hashes until d has passed or the caller went away, and returns
// how many hashes it made.
func burn(r *http.Request, d time.Duration) int {
	end := time.Now().Add(d)
	sum := sha256.Sum256([]byte(r.URL.String()))
	n := 0
	for time.Now().Before(end) && r.Context().Err() == nil {
		for range 1000 {
			sum = sha256.Sum256(sum[:])
			n++
		}
	}
	return n
}
