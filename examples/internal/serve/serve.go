// Package serve runs the examples' HTTP servers the way Surge expects a
// function to: on $PORT (8080 by default), and, on SIGTERM (a replica
// scaled away), finishing the requests in flight before exiting.
package serve

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Run serves h until SIGTERM or an interrupt, then drains for up to ten
// seconds and returns. It exits the process when the server cannot start.
func Run(name string, h http.Handler) {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("%s: listening on :%s", name, port)
	select {
	case err := <-errc:
		log.Fatalf("%s: %v", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Printf("%s: shutdown: %v", name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("%s: %v", name, err)
	}
}
