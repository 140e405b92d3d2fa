// Package store keeps Surge's API objects in etcd.
//
// Every object is one JSON value under a key laid out by its kind (see
// EtcdKey); generic functions take the kind from the object's type, as in
// store.Get[api.Scale](ctx, s, key). The
// object's ResourceVersion is the etcd mod revision of that key; writes that
// carry a ResourceVersion are compare-and-swap transactions on it, which is
// how the API answers 409 to a stale replace (Kubernetes' optimistic
// concurrency, with etcd doing the work).
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/internal/clock"
)

// Store reads and writes API objects in etcd. It is safe for concurrent use.
type Store struct {
	c     *clientv3.Client
	clock clock.Clock
}

// New returns a Store on an etcd client. clk stamps creation times; nil
// is the wall clock.
func New(c *clientv3.Client, clk clock.Clock) *Store {
	return &Store{c: c, clock: clock.Or(clk)}
}

// Client is the etcd client underneath, for leader election and raw reads.
func (s *Store) Client() *clientv3.Client { return s.c }

// decode reads one stored object and stamps its ResourceVersion and Kind.
func decode[T any, P api.ObjectPtr[T]](kv []byte, modRev int64) (*T, error) {
	k := api.KindOf[T, P]()
	var obj T
	if err := json.Unmarshal(kv, &obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Name, err)
	}
	m := P(&obj).GetMetadata()
	m.ResourceVersion = strconv.FormatInt(modRev, 10)
	setKind(P(&obj), k)
	return &obj, nil
}

// setKind fills the kind field of the object types that have one.
func setKind(o api.Object, k api.Kind) {
	switch v := o.(type) {
	case *api.Function:
		v.Kind = k.Name
	case *api.Revision:
		v.Kind = k.Name
	case *api.Traffic:
		v.Kind = k.Name
	case *api.Scale:
		v.Kind = k.Name
	case *api.Replica:
		v.Kind = k.Name
	case *api.Node:
		v.Kind = k.Name
	case *api.Rollout:
		v.Kind = k.Name
	}
}

// encode writes an object for storage: without its ResourceVersion, which
// etcd keeps for us.
func encode(o api.Object) (string, error) {
	m := o.GetMetadata()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	b, err := json.Marshal(o)
	m.ResourceVersion = rv
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", m.Name, err)
	}
	return string(b), nil
}

func notFound(k api.Kind, name string) error { return api.NotFound(k.Name, name) }

// etcdKey is EtcdKey with the not-found error for names the kind cannot
// have.
func etcdKey(k api.Kind, key api.Key) (string, error) {
	ek, ok := EtcdKey(k, key)
	if !ok {
		return "", notFound(k, key.Name)
	}
	return ek, nil
}

// ParseVersion reads a ResourceVersion; empty is 0.
func ParseVersion(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || v < 0 {
		return 0, api.BadRequest("resourceVersion %q is not a non-negative number", rv)
	}
	return v, nil
}

// Get reads one object of type T.
func Get[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, key api.Key) (*T, error) {
	k := api.KindOf[T, P]()
	ek, err := etcdKey(k, key)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Get(ctx, ek)
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", k.Name, key.Name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, notFound(k, key.Name)
	}
	return decode[T, P](resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List reads every object of type T in a scope and the etcd revision it
// was read at.
func List[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, in Scope) ([]T, int64, error) {
	k := api.KindOf[T, P]()
	prefix, err := in.prefix(k)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", k.Plural, err)
	}
	resp, err := s.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", k.Plural, err)
	}
	items := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		obj, err := decode[T, P](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		items = append(items, *obj)
	}
	return items, resp.Header.Revision, nil
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// stampNew fills the server-owned metadata of an object about to be created.
func (s *Store) stampNew(o api.Object) {
	k := o.ObjectKind()
	m := o.GetMetadata()
	m.UID = newUID()
	m.CreationTimestamp = s.clock.Now().UTC().Truncate(time.Second)
	m.ResourceVersion = ""
	if k.Namespaced && m.Namespace == "" {
		m.Namespace = api.DefaultNamespace
	}
	if m.Generation == 0 {
		m.Generation = 1
	}
}

// Create writes a new object; it fails with api.ErrAlreadyExist when one of
// that name exists.
func Create[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, obj P) (*T, error) {
	k := obj.ObjectKind()
	s.stampNew(obj)
	m := obj.GetMetadata()
	key, err := etcdKey(k, api.KeyOf(obj))
	if err != nil {
		return nil, err
	}
	val, err := encode(obj)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("create %s %s: %w", k.Name, m.Name, err)
	}
	if !resp.Succeeded {
		return nil, alreadyExists(k, m.Name)
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	setKind(obj, k)
	return (*T)(obj), nil
}

func alreadyExists(k api.Kind, name string) error {
	return api.NewError(http.StatusConflict, api.ReasonAlreadyExists, "%s %q already exists", lower(k.Name), name)
}

func conflict(k api.Kind, name string) error {
	return api.NewError(http.StatusConflict, api.ReasonConflict,
		"%s %q was changed since you read it: read it again and retry", lower(k.Name), name)
}

func lower(s string) string {
	if s == "" {
		return s
	}
	b := []byte(s)
	if b[0] >= 'A' && b[0] <= 'Z' {
		b[0] += 'a' - 'A'
	}
	return string(b)
}

// Update replaces an existing object. With a ResourceVersion it succeeds
// only if the stored object still has it (api.ErrConflict otherwise);
// without one it overwrites. Server-owned metadata (uid, creation time) is
// kept from the stored object.
func Update[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, obj P) (*T, error) {
	return update[T, P](ctx, s, obj, func(_, _ P) {})
}

// update is Update with a hook that merges the stored object into the new
// one before it is written (to keep a status, say).
func update[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, obj P, merge func(stored, next P)) (*T, error) {
	k := obj.ObjectKind()
	m := obj.GetMetadata()
	if k.Namespaced && m.Namespace == "" {
		m.Namespace = api.DefaultNamespace
	}
	want, err := ParseVersion(m.ResourceVersion)
	if err != nil {
		return nil, err
	}
	key, err := etcdKey(k, api.KeyOf(obj))
	if err != nil {
		return nil, err
	}
	for {
		resp, err := s.c.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("update %s %s: %w", k.Name, m.Name, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, notFound(k, m.Name)
		}
		cur := resp.Kvs[0]
		if want != 0 && cur.ModRevision != want {
			return nil, conflict(k, m.Name)
		}
		stored, err := decode[T, P](cur.Value, cur.ModRevision)
		if err != nil {
			return nil, err
		}
		sm := P(stored).GetMetadata()
		m.UID, m.CreationTimestamp, m.Generation = sm.UID, sm.CreationTimestamp, sm.Generation
		merge(P(stored), obj)
		val, err := encode(obj)
		if err != nil {
			return nil, err
		}
		tr, err := s.c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)).
			Then(clientv3.OpPut(key, val)).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("update %s %s: %w", k.Name, m.Name, err)
		}
		if !tr.Succeeded {
			if want != 0 {
				return nil, conflict(k, m.Name)
			}
			continue // lost a race with another unconditional writer: read again
		}
		m.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
		setKind(obj, k)
		return (*T)(obj), nil
	}
}

// Delete removes one object of type T. A non-empty resourceVersion makes
// it conditional, as for Update.
func Delete[T any, P api.ObjectPtr[T]](ctx context.Context, s *Store, key api.Key, resourceVersion string) error {
	k := api.KindOf[T, P]()
	want, err := ParseVersion(resourceVersion)
	if err != nil {
		return err
	}
	name := key.Name
	ek, err := etcdKey(k, key)
	if err != nil {
		return err
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(ek), ">", 0)
	if want != 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(ek), "=", want)
	}
	resp, err := s.c.Txn(ctx).If(cmp).Then(clientv3.OpDelete(ek)).Else(clientv3.OpGet(ek)).Commit()
	if err != nil {
		return fmt.Errorf("delete %s %s: %w", k.Name, name, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return notFound(k, name)
		}
		return conflict(k, name)
	}
	return nil
}

// UpdateScaleSpec replaces a Scale's spec, keeping the status and labels
// the system wrote: what a user or the autoscaler changes is only how many
// replicas it wants.
func UpdateScaleSpec(ctx context.Context, s *Store, sc *api.Scale) (*api.Scale, error) {
	return update(ctx, s, sc, func(stored, next *api.Scale) {
		next.Status = stored.Status
		next.Metadata.Labels = stored.Metadata.Labels
	})
}

// UpdateReplicaStatus writes only a Replica's status (what its node agent
// reports), keeping the spec and labels the control plane wrote.
func UpdateReplicaStatus(ctx context.Context, s *Store, r *api.Replica) (*api.Replica, error) {
	return update(ctx, s, r, func(stored, next *api.Replica) {
		next.Spec = stored.Spec
		next.Metadata.Labels = stored.Metadata.Labels
	})
}

// UpdateNodeStatus writes only a Node's status, keeping its spec (subnet,
// cordon) and labels.
func UpdateNodeStatus(ctx context.Context, s *Store, n *api.Node) (*api.Node, error) {
	return update(ctx, s, n, func(stored, next *api.Node) {
		next.Spec = stored.Spec
		next.Metadata.Labels = stored.Metadata.Labels
	})
}

// UpdateScaleStatus writes only a Scale's status, keeping the desired count
// the autoscaler or a user set.
func UpdateScaleStatus(ctx context.Context, s *Store, sc *api.Scale) (*api.Scale, error) {
	return update(ctx, s, sc, func(stored, next *api.Scale) {
		next.Spec = stored.Spec
		next.Metadata.Labels = stored.Metadata.Labels
	})
}

// SetScaleReplicas changes a Scale's desired count from one value to
// another: a compare-and-swap on the count alone, so that the status
// writes the controllers make all the time do not make it fail, while a
// concurrent change of the count itself (an activation, a user) does, with
// api.ErrConflict.
func SetScaleReplicas(ctx context.Context, s *Store, key api.Key, from, to int32) (*api.Scale, error) {
	for {
		sc, err := Get[api.Scale](ctx, s, key)
		if err != nil {
			return nil, err
		}
		if sc.Spec.Replicas != from {
			return nil, conflict(api.ScaleKind, key.Name)
		}
		sc.Spec.Replicas = to
		out, err := UpdateScaleSpec(ctx, s, sc)
		if errors.Is(err, api.ErrConflict) {
			continue // the status moved under us: read again
		}
		return out, err
	}
}
