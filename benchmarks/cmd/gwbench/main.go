// Command gwbench runs one side of the gateway benchmarks in a process of
// its own, so that the benchmark runner (benchmarks/cmd/bench) can pin it
// to a core with taskset:
//
//	gwbench backend  -addr A                 a fasthttp "hello" server
//	gwbench surge    -addr A -backend B      Surge's gateway, routing hello.surge.localhost to B
//	gwbench httputil -addr A -backend B      net/http/httputil.ReverseProxy to B
//
// Servers run until they are killed or interrupted. -cpuprofile FILE writes
// a CPU profile of the server until then (go tool pprof FILE), to see where
// a proxy's core goes under load. -debug-addr A serves the process's memory
// figures, for B8's breakdown of an idle connection's cost, and
// -memprofilerate 1 profiles every allocation so that the figures say what
// the heap holds. -tls-cert F -tls-key K serves HTTPS at -addr instead
// (surge: HTTP/1.1; httputil: h2 and HTTP/1.1, by ALPN).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/surgeplatform/surge/benchmarks"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gwbench backend|surge|httputil [flags]")
		os.Exit(2)
	}
	role := os.Args[1]
	fs := flag.NewFlagSet(role, flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	backend := fs.String("backend", "", "backend address (surge, httputil)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until the server stops")
	debugAddr := fs.String("debug-addr", "", "serve the process's memory figures as JSON on this address (benchmarks.ServeMemStats)")
	profileRate := fs.Int("memprofilerate", 0, "set runtime.MemProfileRate (1 profiles every allocation, for the breakdown of -debug-addr)")
	certFile := fs.String("tls-cert", "", "serve HTTPS at -addr with this PEM certificate (surge, httputil: h2 and HTTP/1.1)")
	keyFile := fs.String("tls-key", "", "PEM key of -tls-cert")
	_ = fs.Parse(os.Args[2:])
	if *profileRate > 0 {
		runtime.MemProfileRate = *profileRate
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "gwbench: cpu profile: %v\n", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	if *debugAddr != "" {
		go func() { _ = http.ListenAndServe(*debugAddr, http.HandlerFunc(benchmarks.ServeMemStats)) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch role {
	case "backend":
		err = runBackend(ctx, *addr)
	case "surge":
		err = runSurge(ctx, *addr, *backend, *certFile, *keyFile)
	case "httputil":
		err = runHTTPUtil(ctx, *addr, *backend, *certFile, *keyFile)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "gwbench %s: %v\n", role, err)
		os.Exit(1)
	}
}

func runBackend(ctx context.Context, addr string) error {
	srv := benchmarks.HelloBackend()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = srv.Shutdown() }()
	return srv.Serve(ln)
}

func runSurge(ctx context.Context, addr, backend, certFile, keyFile string) error {
	g, err := benchmarks.SurgeGateway(addr, backend, nil)
	if certFile != "" {
		g, err = benchmarks.SurgeGatewayTLS(addr, backend, certFile, keyFile)
	}
	if err != nil {
		return err
	}
	return g.Run(ctx)
}

func runHTTPUtil(ctx context.Context, addr, backend, certFile, keyFile string) error {
	srv := benchmarks.HTTPUtilServer(addr, backend)
	go func() { <-ctx.Done(); _ = srv.Close() }()
	var err error
	if certFile != "" {
		err = srv.ListenAndServeTLS(certFile, keyFile) // h2 and HTTP/1.1, by ALPN
	} else {
		err = srv.ListenAndServe()
	}
	if err != http.ErrServerClosed {
		return err
	}
	return nil
}
