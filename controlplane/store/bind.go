package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// BindReplica binds replica r to a node in one etcd transaction: it writes
// r with spec.nodeName set to node and its status message cleared, if r
// is still at its ResourceVersion and the node at nodeVersion (as the
// scheduler read them). When either changed since — another scheduler
// bound the replica, its agent or a user wrote it, the node was cordoned,
// drained or declared dead — it writes nothing and fails with
// api.ErrConflict, for the caller to read both again and decide anew; a
// replica that is gone fails with api.ErrNotFound. A scheduler that binds
// from a cache thus never binds on a stale view, and never overwrites a
// newer replica.
func BindReplica(ctx context.Context, s *Store, r *api.Replica, node, nodeVersion string) (*api.Replica, error) {
	rv, err := ParseVersion(r.Metadata.ResourceVersion)
	if err != nil {
		return nil, err
	}
	nv, err := ParseVersion(nodeVersion)
	if err != nil {
		return nil, err
	}
	if rv == 0 || nv == 0 {
		return nil, api.BadRequest("bind replica %s: the replica's and the node's resourceVersions are required", r.Metadata.Name)
	}
	key, err := etcdKey(api.ReplicaKind, api.KeyOf(r))
	if err != nil {
		return nil, err
	}
	nodeKey, _ := EtcdKey(api.NodeKind, api.Key{Name: node})
	out := *r
	out.Spec.NodeName = node
	out.Status.Message = ""
	val, err := encode(&out)
	if err != nil {
		return nil, err
	}
	tr, err := s.c.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", rv),
		clientv3.Compare(clientv3.ModRevision(nodeKey), "=", nv),
	).Then(clientv3.OpPut(key, val)).Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return nil, fmt.Errorf("bind replica %s to node %s: %w", r.Metadata.Name, node, err)
	}
	if !tr.Succeeded {
		if tr.Responses[0].GetResponseRange().Count == 0 {
			return nil, notFound(api.ReplicaKind, r.Metadata.Name)
		}
		return nil, api.NewError(http.StatusConflict, api.ReasonConflict,
			"replica %q or node %q changed since the scheduler read them: read both again and retry", r.Metadata.Name, node)
	}
	out.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
	out.Kind = api.KindReplica
	return &out, nil
}

// CreateBoundReplica creates replica r already bound to a node, in one
// transaction that succeeds only if no replica of that name exists and the
// node is still at nodeVersion: the replica controller places a new
// replica as it makes it, saving the binding's write and its watch
// events. A node that changed fails it with api.ErrConflict (the caller
// creates the replica unbound, for the scheduler), a name taken with
// api.ErrAlreadyExist.
func CreateBoundReplica(ctx context.Context, s *Store, r *api.Replica, node, nodeVersion string) (*api.Replica, error) {
	nv, err := ParseVersion(nodeVersion)
	if err != nil {
		return nil, err
	}
	if nv == 0 {
		return nil, api.BadRequest("create replica %s: the node's resourceVersion is required", r.Metadata.Name)
	}
	s.stampNew(r)
	r.Spec.NodeName = node
	key, err := etcdKey(api.ReplicaKind, api.KeyOf(r))
	if err != nil {
		return nil, err
	}
	nodeKey, _ := EtcdKey(api.NodeKind, api.Key{Name: node})
	val, err := encode(r)
	if err != nil {
		return nil, err
	}
	tr, err := s.c.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.ModRevision(nodeKey), "=", nv),
	).Then(clientv3.OpPut(key, val)).Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return nil, fmt.Errorf("create replica %s on node %s: %w", r.Metadata.Name, node, err)
	}
	if !tr.Succeeded {
		if tr.Responses[0].GetResponseRange().Count > 0 {
			return nil, alreadyExists(api.ReplicaKind, r.Metadata.Name)
		}
		return nil, api.NewError(http.StatusConflict, api.ReasonConflict,
			"node %q changed since the scheduler read it: read it again and retry", node)
	}
	r.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
	r.Kind = api.KindReplica
	return r, nil
}

// KindPrefix is the etcd key prefix of every object of kind k, for a
// reader of the store's raw watch (the controllers' cache).
func KindPrefix(k api.Kind) string { return kindPrefix(k, "") }

// Decode reads an object of type T from the value of its etcd key, as
// Get does, with modRevision as its ResourceVersion.
func Decode[T any, P api.ObjectPtr[T]](value []byte, modRevision int64) (*T, error) {
	return decode[T, P](value, modRevision)
}

// KeyOfEtcdKey reads back the object key of an etcd key under
// KindPrefix(k): ok is false when etcdKey is not one of k's.
func KeyOfEtcdKey(k api.Kind, etcdKey string) (key api.Key, ok bool) {
	rest, ok := strings.CutPrefix(etcdKey, KindPrefix(k))
	if !ok || rest == "" {
		return api.Key{}, false
	}
	parts := strings.Split(rest, "/")
	key.Name = parts[len(parts)-1]
	if k.Namespaced {
		if len(parts) < 2 {
			return api.Key{}, false
		}
		key.Namespace = parts[0]
	}
	return key, key.Name != ""
}

// ParseNodeLease reads a node lease's etcd key and value (under
// LeasePrefix): the node and when it last beat.
func ParseNodeLease(etcdKey string, value []byte) (node string, renewed time.Time, ok bool) {
	node, ok = strings.CutPrefix(etcdKey, LeasePrefix)
	if !ok || node == "" {
		return "", time.Time{}, false
	}
	var l nodeLease
	if json.Unmarshal(value, &l) != nil {
		return "", time.Time{}, false
	}
	return node, l.RenewTime, true
}
