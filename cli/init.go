package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
)

// InitOptions are the inputs of `surge init`.
type InitOptions struct {
	Streams
	Name string
	Lang string
	// Dir is where the function goes; "" is ./NAME.
	Dir string
}

func newInitCmd(s Streams) *cobra.Command {
	o := &InitOptions{Streams: s}
	c := &cobra.Command{
		Use:   "init NAME [--lang go] [--dir DIR]",
		Short: "Make a new function in a folder, ready to deploy",
		Long: `Init writes a new function into ./NAME (or --dir): its handler, go.mod and a
surge.yaml that says how to deploy it. It deploys as it is:

  surge init hi && cd hi && surge deploy`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runInit(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Lang, "lang", "go", "language of the function: go")
	c.Flags().StringVar(&o.Dir, "dir", "", "folder to write (default ./NAME); it must be empty or absent")
	_ = c.RegisterFlagCompletionFunc("lang", cobra.FixedCompletions([]string{"go"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func runInit(_ context.Context, o *InitOptions) error {
	if err := api.ValidateName(o.Name); err != nil {
		return usagef("function %q: name %s", o.Name, api.NameRule)
	}
	if o.Lang != "go" {
		return usagef("--lang %q: Surge builds go; other languages deploy as images (surge deploy NAME --image REF, or --archive FILE)", o.Lang)
	}
	dir := o.Dir
	if dir == "" {
		dir = o.Name
	}
	ents, err := os.ReadDir(dir)
	switch {
	case err == nil && len(ents) > 0:
		return fmt.Errorf("%s is not empty: give another NAME, or --dir for an empty folder", dir)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("init %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	files := []struct{ name, text string }{
		{"go.mod", "module " + o.Name + "\n\ngo 1.22\n"},
		{"main.go", strings.ReplaceAll(initMain, "NAME", o.Name)},
		{ManifestFile, strings.ReplaceAll(initManifest, "NAME", o.Name)},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.text), 0o644); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	fmt.Fprintf(o.Out, "made function %q in %s: main.go, go.mod, %s\n", o.Name, dir, ManifestFile)
	fmt.Fprintf(o.Out, "deploy it: cd %s && surge deploy\n", dir)
	return nil
}

// initManifest is the surge.yaml of a new function; NAME is replaced.
const initManifest = `# What ` + "`surge deploy`" + ` deploys from this folder; ` + "`surge deploy --help`" + ` lists
# every field (env, resources, scaling, ...).
functions:
  - name: NAME
    build: .
    readiness:
      path: /healthz
`

// initMain is the handler of a new function; NAME is replaced.
const initMain = `// Command NAME is a Surge function: an HTTP server on $PORT.
//
//	surge deploy           build, push and deploy it (see surge.yaml)
//	surge invoke NAME      call it through the gateway
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from NAME: %s %s\n", r.Method, r.URL.Path)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// Surge sends SIGTERM when it scales a replica away: finish the
	// requests in flight, then exit.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("NAME: listening on :%s", port)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-drained
}
`
