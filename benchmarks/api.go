package benchmarks

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane"
)

// APIOps is how many mutations B7 makes of each kind.
const APIOps = 1000

// B7 goal from the issue: p99 of a mutating API call at most 50 ms.
const apiP99Goal = 50 * time.Millisecond

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// APILatency is B7: it starts a real server (embedded etcd, HTTPS API) in a
// temporary directory, then times APIOps function writes through the API
// (half creates, half replaces that make a new revision) and APIOps raw
// etcd Puts of the same size from the same process.
func APILatency(ctx context.Context) ([]Row, error) {
	dir, err := os.MkdirTemp("", "surge-bench-api-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg := controlplane.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Name = "bench"
	cfg.WriteUserConfig = false
	for _, p := range []*string{&cfg.APIAddr, &cfg.EtcdClientAddr, &cfg.EtcdPeerAddr} {
		if *p, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	srv, err := controlplane.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "bench")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-srv.Ready():
	case err := <-done:
		return nil, fmt.Errorf("start server: %w", err)
	}
	c, err := client.New(srv.AdminConfig())
	if err != nil {
		return nil, err
	}

	apiSamples := make([]time.Duration, 0, APIOps)
	names := APIOps / 2
	for i := range APIOps {
		f := &api.Function{
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i%names)},
			Spec:     api.FunctionSpec{Image: "example.test/bench:v1", Env: []api.EnvVar{{Name: "ROUND", Value: fmt.Sprint(i / names)}}},
		}
		start := time.Now()
		if _, err := c.PutFunction(ctx, f); err != nil {
			return nil, fmt.Errorf("deploy %d: %w", i, err)
		}
		apiSamples = append(apiSamples, time.Since(start))
	}

	etcd := srv.Store().Client()
	val := strings.Repeat("x", 600) // about a stored Function's size
	etcdSamples := make([]time.Duration, 0, APIOps)
	for i := range APIOps {
		start := time.Now()
		if _, err := etcd.Put(ctx, fmt.Sprintf("/bench/raw/%04d", i%names), val); err != nil {
			return nil, fmt.Errorf("etcd put %d: %w", i, err)
		}
		etcdSamples = append(etcdSamples, time.Since(start))
	}
	return []Row{
		{Bench: "B7", Subject: "etcd Put, in process", Samples: etcdSamples, Baseline: true},
		{Bench: "B7", Subject: "API deploy (HTTPS, create/replace)", Samples: apiSamples,
			Note: goal("p99", Quantile(apiSamples, 0.99), apiP99Goal)},
	}, nil
}
