package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// WriteMode says whether a Function write may create, replace, or both.
type WriteMode int

// Write modes of PutFunction.
const (
	// CreateOnly fails with api.ErrAlreadyExist when the function exists.
	CreateOnly WriteMode = iota
	// ReplaceOnly fails with api.ErrNotFound when it does not.
	ReplaceOnly
	// CreateOrReplace is what `surge deploy` does.
	CreateOrReplace
)

// FunctionResult is the outcome of PutFunction.
type FunctionResult struct {
	Function *api.Function
	// Created is true when the function did not exist before.
	Created bool
	// Revision is the revision the write made, or "" when the spec was
	// unchanged and no revision was made.
	Revision string
}

// PutOption adds to what PutFunction writes.
type PutOption func(*putOptions)

type putOptions struct{ digest string }

// WithImageDigest records the digest the function's image resolved to at
// this deploy (see api.RevisionSpec.ImageDigest): a new revision runs it,
// and an unchanged spec whose tag now resolves to another digest makes a
// new revision too.
func WithImageDigest(digest string) PutOption {
	return func(o *putOptions) { o.digest = digest }
}

// PutFunction writes a Function with the deploy semantics users expect:
//
//   - a new spec, or one that differs from the stored one, makes a new
//     immutable Revision NAME-0000N (N = the function's generation) and a
//     Scale for it, in one etcd transaction;
//   - a new function's Traffic goes to its first revision in that
//     transaction; an existing function's stays where it is until the new
//     revision has a Ready replica, when the rollout controller moves it
//     (PromoteRevision): a revision that cannot start takes no traffic;
//   - an unchanged spec makes no revision: deploys are idempotent; unless
//     WithImageDigest says that its image's tag moved to another digest;
//   - a ResourceVersion on f makes the write conditional (api.ErrConflict).
//
// f's spec must be defaulted and valid.
func (s *Store) PutFunction(ctx context.Context, f *api.Function, mode WriteMode, opts ...PutOption) (*FunctionResult, error) {
	var po putOptions
	for _, o := range opts {
		o(&po)
	}
	m := &f.Metadata
	if m.Namespace == "" {
		m.Namespace = api.DefaultNamespace
	}
	want, err := ParseVersion(m.ResourceVersion)
	if err != nil {
		return nil, err
	}
	fkey, _ := EtcdKey(api.FunctionKind, api.KeyOf(f))
	for {
		resp, err := s.c.Get(ctx, fkey)
		if err != nil {
			return nil, fmt.Errorf("deploy function %s: %w", m.Name, err)
		}
		var cur *api.Function
		var curRev int64
		if len(resp.Kvs) > 0 {
			curRev = resp.Kvs[0].ModRevision
			if cur, err = decode[api.Function](resp.Kvs[0].Value, curRev); err != nil {
				return nil, err
			}
		}
		switch {
		case cur != nil && mode == CreateOnly:
			return nil, alreadyExists(api.FunctionKind, m.Name)
		case cur == nil && mode == ReplaceOnly:
			return nil, notFound(api.FunctionKind, m.Name)
		case cur != nil && want != 0 && curRev != want:
			return nil, conflict(api.FunctionKind, m.Name)
		case cur == nil && want != 0:
			return nil, notFound(api.FunctionKind, m.Name)
		}

		next := *f
		next.Status = api.FunctionStatus{}
		if cur != nil {
			next.Metadata.UID = cur.Metadata.UID
			next.Metadata.CreationTimestamp = cur.Metadata.CreationTimestamp
			next.Metadata.Generation = cur.Metadata.Generation
			next.Status = cur.Status
			same, err := sameSpec(&cur.Spec, &f.Spec)
			if err != nil {
				return nil, err
			}
			if same && (po.digest == "" || po.digest == cur.Status.ImageDigest) {
				if maps.Equal(cur.Metadata.Labels, f.Metadata.Labels) {
					return &FunctionResult{Function: cur}, nil
				}
				// Labels only: rewrite the function, make no revision.
				fval, err := encode(&next)
				if err != nil {
					return nil, err
				}
				tr, err := s.c.Txn(ctx).
					If(clientv3.Compare(clientv3.ModRevision(fkey), "=", curRev)).
					Then(clientv3.OpPut(fkey, fval)).Commit()
				if err != nil {
					return nil, fmt.Errorf("deploy function %s: %w", m.Name, err)
				}
				if !tr.Succeeded {
					if want != 0 {
						return nil, conflict(api.FunctionKind, m.Name)
					}
					continue
				}
				next.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
				next.Kind = api.KindFunction
				return &FunctionResult{Function: &next}, nil
			}
		} else {
			s.stampNew(&next)
			next.Metadata.Generation = 0
		}
		next.Metadata.Generation++
		revName := api.RevisionName(m.Name, next.Metadata.Generation)
		next.Status.LatestRevision = revName
		next.Status.ImageDigest = po.digest

		ops, err := s.revisionOps(&next, revName, cur == nil)
		if err != nil {
			return nil, err
		}
		fval, err := encode(&next)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(fkey, fval))
		guard := clientv3.Compare(clientv3.CreateRevision(fkey), "=", 0)
		if cur != nil {
			guard = clientv3.Compare(clientv3.ModRevision(fkey), "=", curRev)
		}
		tr, err := s.c.Txn(ctx).If(guard).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("deploy function %s: %w", m.Name, err)
		}
		if !tr.Succeeded {
			if want != 0 {
				return nil, conflict(api.FunctionKind, m.Name)
			}
			if mode == CreateOnly {
				return nil, alreadyExists(api.FunctionKind, m.Name)
			}
			continue // someone else deployed in between: decide again on what they wrote
		}
		next.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
		next.Kind = api.KindFunction
		return &FunctionResult{Function: &next, Created: cur == nil, Revision: revName}, nil
	}
}

// revisionOps are the writes that go with a new revision of fn: the
// Revision itself, its Scale, and, when first, the function's Traffic to it.
func (s *Store) revisionOps(fn *api.Function, revName string, first bool) ([]clientv3.Op, error) {
	ns := fn.Metadata.Namespace
	labels := map[string]string{api.LabelFunction: fn.Metadata.Name}
	rev := &api.Revision{
		Metadata: api.ObjectMeta{Name: revName, Namespace: ns, Labels: labels},
		Spec: api.RevisionSpec{Function: fn.Metadata.Name, Number: fn.Metadata.Generation, Template: fn.Spec,
			ImageDigest: fn.Status.ImageDigest},
	}
	s.stampNew(rev)
	scale := &api.Scale{
		Metadata: api.ObjectMeta{Name: revName, Namespace: ns, Labels: map[string]string{api.LabelFunction: fn.Metadata.Name, api.LabelRevision: revName}},
		Spec:     api.ScaleSpec{Replicas: api.InitialScale(&fn.Spec)},
	}
	s.stampNew(scale)
	writes := []api.Object{rev, scale}
	if first {
		traffic := allTrafficTo(fn, revName)
		s.stampNew(traffic)
		writes = append(writes, traffic)
	}
	var ops []clientv3.Op
	for _, o := range writes {
		val, err := encode(o)
		if err != nil {
			return nil, err
		}
		key, _ := EtcdKey(o.ObjectKind(), api.KeyOf(o))
		ops = append(ops, clientv3.OpPut(key, val))
	}
	return ops, nil
}

// allTrafficTo is fn's Traffic with every request going to revName.
func allTrafficTo(fn *api.Function, revName string) *api.Traffic {
	return &api.Traffic{
		Metadata: api.ObjectMeta{Name: fn.Metadata.Name, Namespace: fn.Metadata.Namespace,
			Labels: map[string]string{api.LabelFunction: fn.Metadata.Name}},
		Spec: api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: revName, Percent: 100}}},
	}
}

// PromoteRevision ends a deploy's rollout once its revision has a Ready
// replica: the function records revName as its LatestReadyRevision, and
// its Traffic moves to revName, all of it, in the same transaction. It
// does so only while revName is still the function's latest revision and
// not yet promoted, and only if neither the function nor its Traffic
// changed since they were read (else api.ErrConflict: read again).
//
// The traffic moves only if nobody set it since the deploy made revName:
// a split or a rollback written while the revision was starting (or after
// the deploy, on a function stored before this rule) is the user's word
// and stays; the revision is then only recorded as ready. PromoteRevision
// reports whether the traffic followed the deploy: moved to revName, or
// found all on it already (a new function's first revision), in which
// case the Traffic is not written again.
func (s *Store) PromoteRevision(ctx context.Context, function api.Key, revName string) (bool, error) {
	fnName := function.Name
	fkey, _ := EtcdKey(api.FunctionKind, function)
	tkey, _ := EtcdKey(api.TrafficKind, function)
	rkey, ok := EtcdKey(api.RevisionKind, api.Key{Namespace: function.Namespace, Name: revName})
	if !ok {
		return false, notFound(api.RevisionKind, revName)
	}
	resp, err := s.c.Txn(ctx).Then(clientv3.OpGet(fkey), clientv3.OpGet(tkey), clientv3.OpGet(rkey)).Commit()
	if err != nil {
		return false, fmt.Errorf("promote revision %s: %w", revName, err)
	}
	fkvs := resp.Responses[0].GetResponseRange().Kvs
	tkvs := resp.Responses[1].GetResponseRange().Kvs
	rkvs := resp.Responses[2].GetResponseRange().Kvs
	if len(fkvs) == 0 {
		return false, notFound(api.FunctionKind, fnName)
	}
	if len(rkvs) == 0 {
		return false, notFound(api.RevisionKind, revName)
	}
	fn, err := decode[api.Function](fkvs[0].Value, fkvs[0].ModRevision)
	if err != nil {
		return false, err
	}
	if fn.Status.LatestRevision != revName || fn.Status.LatestReadyRevision == revName {
		return false, nil
	}
	fn.Status.LatestReadyRevision = revName
	fval, err := encode(fn)
	if err != nil {
		return false, err
	}
	guards := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(fkey), "=", fkvs[0].ModRevision)}
	ops := []clientv3.Op{clientv3.OpPut(fkey, fval)}
	// The deploy wrote the revision; a Traffic written since is the user's.
	move := len(tkvs) == 0 || tkvs[0].ModRevision <= rkvs[0].CreateRevision
	var cur *api.Traffic
	if len(tkvs) > 0 {
		if cur, err = decode[api.Traffic](tkvs[0].Value, tkvs[0].ModRevision); err != nil {
			return false, err
		}
	}
	already := cur != nil && len(cur.Spec.Targets) == 1 && cur.Spec.Targets[0] == api.TrafficTarget{Revision: revName, Percent: 100}
	if move && !already {
		traffic := allTrafficTo(fn, revName)
		if cur != nil {
			traffic.Metadata = cur.Metadata
			traffic.Metadata.ResourceVersion = ""
			guards = append(guards, clientv3.Compare(clientv3.ModRevision(tkey), "=", tkvs[0].ModRevision))
		} else {
			s.stampNew(traffic)
			guards = append(guards, clientv3.Compare(clientv3.CreateRevision(tkey), "=", 0))
		}
		tval, err := encode(traffic)
		if err != nil {
			return false, err
		}
		ops = append(ops, clientv3.OpPut(tkey, tval))
	}
	tr, err := s.c.Txn(ctx).If(guards...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("promote revision %s: %w", revName, err)
	}
	if !tr.Succeeded {
		return false, conflict(api.FunctionKind, fnName)
	}
	return move, nil // already counts as moved: the traffic followed
}

// sameSpec compares two specs by their JSON form, which is what is stored.
func sameSpec(a, b *api.FunctionSpec) (bool, error) {
	ja, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	jb, err := json.Marshal(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ja, jb), nil
}

// DeleteFunction removes a function with its revisions, traffic, scales and
// replicas, in one transaction. A non-empty resourceVersion makes it
// conditional.
func (s *Store) DeleteFunction(ctx context.Context, key api.Key, resourceVersion string) error {
	want, err := ParseVersion(resourceVersion)
	if err != nil {
		return err
	}
	ns, name := key.Namespace, key.Name
	fkey, _ := EtcdKey(api.FunctionKind, key)
	guard := clientv3.Compare(clientv3.CreateRevision(fkey), ">", 0)
	if want != 0 {
		guard = clientv3.Compare(clientv3.ModRevision(fkey), "=", want)
	}
	tkey, _ := EtcdKey(api.TrafficKind, key)
	ops := []clientv3.Op{clientv3.OpDelete(fkey), clientv3.OpDelete(tkey)}
	for _, k := range []api.Kind{api.RevisionKind, api.ScaleKind, api.ReplicaKind} {
		p, err := Scope{Namespace: ns, Function: name}.prefix(k)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	resp, err := s.c.Txn(ctx).If(guard).Then(ops...).Else(clientv3.OpGet(fkey)).Commit()
	if err != nil {
		return fmt.Errorf("delete function %s: %w", name, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return notFound(api.FunctionKind, name)
		}
		return conflict(api.FunctionKind, name)
	}
	return nil
}
