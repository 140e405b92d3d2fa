package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// Gone is the error of a watch that asks for a compacted version.
func Gone(rev, compacted int64) *api.Error {
	return api.NewError(http.StatusGone, api.ReasonGone,
		"resourceVersion %d is older than the oldest kept (%d): list again and watch from the list's resourceVersion", rev, compacted)
}

// Watcher streams the changes of the objects of type T in a scope.
type Watcher[T any, P api.ObjectPtr[T]] struct {
	k      api.Kind
	ch     clientv3.WatchChan
	cancel context.CancelFunc
	err    error
}

// Watch starts watching the objects of type T in a scope for changes
// after version rev (0 = from now). When rev has been compacted away, the watch
// ends with api.ErrGone (an *api.Error with code 410) before any event:
// from Watch itself when etcd says so at once (callers can then answer the
// request with the error instead of a stream), else from the first Next.
func Watch[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, in Scope, rev int64) (*Watcher[T, P], error) {
	k := api.KindOf[T, P]()
	prefix, err := in.prefix(k)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", k.Plural, err)
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify(), clientv3.WithProgressNotify()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	ch := s.c.Watch(ctx, prefix, opts...)
	first, ok := <-ch
	if !ok {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("watch %s: closed before it started", k.Plural)
	}
	if first.CompactRevision != 0 {
		cancel()
		return nil, Gone(rev, first.CompactRevision)
	}
	if err := first.Err(); err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", k.Plural, err)
	}
	return &Watcher[T, P]{k: k, ch: ch, cancel: cancel}, nil
}

// Stop ends the watch.
func (w *Watcher[T, P]) Stop() { w.cancel() }

// Next blocks for the next batch of events. A batch with no events and a
// resourceVersion is a progress notification (a bookmark). It returns an
// error when the watch ends: api.ErrGone if etcd compacted past it, the
// context's error if it was cancelled.
func (w *Watcher[T, P]) Next() ([]api.WatchEvent[*T], int64, error) {
	if w.err != nil {
		return nil, 0, w.err
	}
	resp, ok := <-w.ch
	if !ok {
		w.err = errors.New("watch ended")
		return nil, 0, w.err
	}
	if resp.CompactRevision != 0 {
		w.err = Gone(0, resp.CompactRevision)
		return nil, 0, w.err
	}
	if err := resp.Err(); err != nil {
		w.err = fmt.Errorf("watch %s: %w", w.k.Plural, err)
		return nil, 0, w.err
	}
	events := make([]api.WatchEvent[*T], 0, len(resp.Events))
	for _, ev := range resp.Events {
		e := api.WatchEvent[*T]{ResourceVersion: strconv.FormatInt(ev.Kv.ModRevision, 10)}
		var val []byte
		var rev int64
		switch {
		case ev.Type == mvccpb.DELETE:
			e.Type = api.EventDeleted
			if ev.PrevKv == nil {
				continue
			}
			val, rev = ev.PrevKv.Value, ev.Kv.ModRevision
		case ev.IsCreate():
			e.Type, val, rev = api.EventAdded, ev.Kv.Value, ev.Kv.ModRevision
		default:
			e.Type, val, rev = api.EventModified, ev.Kv.Value, ev.Kv.ModRevision
		}
		obj, err := decode[T, P](val, rev)
		if err != nil {
			w.err = err
			return nil, 0, err
		}
		e.Object = obj
		events = append(events, e)
	}
	return events, resp.Header.Revision, nil
}
