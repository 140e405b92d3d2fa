package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/internal/clock"
)

// instrumentEtcd times every key-value round trip the server makes to etcd
// (the store's, the tokens', the controllers', the autoscaler's: they
// share cli) in surge_etcd_request_duration_seconds by operation. It wraps
// cli.KV, so that the embedded member's in-process client and a dialled
// one are measured alike; watches are streams, not round trips, and are
// left out.
func instrumentEtcd(cli *clientv3.Client, reg prometheus.Registerer, clk clock.Clock) error {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "surge_etcd_request_duration_seconds",
		Help:    "Round trips from this server to etcd, by operation (get, put, delete, txn, compact).",
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 15),
	}, []string{"operation"})
	if err := reg.Register(h); err != nil {
		return fmt.Errorf("register etcd metrics: %w", err)
	}
	cli.KV = timedKV{KV: cli.KV, clock: clk, ops: [...]prometheus.Observer{
		opGet: h.WithLabelValues("get"), opPut: h.WithLabelValues("put"), opDelete: h.WithLabelValues("delete"),
		opTxn: h.WithLabelValues("txn"), opCompact: h.WithLabelValues("compact"),
	}}
	return nil
}

const (
	opGet = iota
	opPut
	opDelete
	opTxn
	opCompact
	numOps
)

// timedKV is a clientv3.KV that observes each call's duration.
type timedKV struct {
	clientv3.KV
	clock clock.Clock
	ops   [numOps]prometheus.Observer
}

func (k timedKV) observe(op int, start time.Time) { k.ops[op].Observe(k.clock.Since(start).Seconds()) }

func (k timedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	defer k.observe(opGet, k.clock.Now())
	return k.KV.Get(ctx, key, opts...)
}

func (k timedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	defer k.observe(opPut, k.clock.Now())
	return k.KV.Put(ctx, key, val, opts...)
}

func (k timedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	defer k.observe(opDelete, k.clock.Now())
	return k.KV.Delete(ctx, key, opts...)
}

func (k timedKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	defer k.observe(opCompact, k.clock.Now())
	return k.KV.Compact(ctx, rev, opts...)
}

func (k timedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	i := opGet
	switch {
	case op.IsPut():
		i = opPut
	case op.IsDelete():
		i = opDelete
	case op.IsTxn():
		i = opTxn
	}
	defer k.observe(i, k.clock.Now())
	return k.KV.Do(ctx, op)
}

func (k timedKV) Txn(ctx context.Context) clientv3.Txn {
	return timedTxn{Txn: k.KV.Txn(ctx), kv: k}
}

// timedTxn observes a transaction's Commit.
type timedTxn struct {
	clientv3.Txn
	kv timedKV
}

func (t timedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return timedTxn{Txn: t.Txn.If(cs...), kv: t.kv}
}

func (t timedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return timedTxn{Txn: t.Txn.Then(ops...), kv: t.kv}
}

func (t timedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return timedTxn{Txn: t.Txn.Else(ops...), kv: t.kv}
}

func (t timedTxn) Commit() (*clientv3.TxnResponse, error) {
	defer t.kv.observe(opTxn, t.kv.clock.Now())
	return t.Txn.Commit()
}
