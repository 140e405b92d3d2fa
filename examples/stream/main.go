// Command stream is a Surge function that answers with server-sent events
// (https://html.spec.whatwg.org/multipage/server-sent-events.html): GET
// /?n=N&every=D sends N events (default 5, at most 1000), one every D
// (default 1s, Go duration syntax), each flushed through the gateway as it
// is written.
package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

func main() { serve.Run("stream", newHandler()) }

func newHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, every := 5, time.Second
		if s := q.Get("n"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > 1000 {
				http.Error(w, fmt.Sprintf("n=%q: want 1 to 1000 events", s), http.StatusBadRequest)
				return
			}
			n = v
		}
		if s := q.Get("every"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 || d > time.Minute {
				http.Error(w, fmt.Sprintf("every=%q: want a duration up to 1m, like 200ms", s), http.StatusBadRequest)
				return
			}
			every = d
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		t := time.NewTicker(max(every, time.Millisecond))
		defer t.Stop()
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "id: %d\nevent: tick\ndata: tick %d of %d\n\n", i, i, n)
			if err := rc.Flush(); err != nil {
				return
			}
			if i == n {
				return
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
	})
}
