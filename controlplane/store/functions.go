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

// initialScale is how many replicas a new revision asks for before the
// autoscaler has seen any traffic: at least one, so that a broken image
// shows up at deploy time rather than on the first request (Knative's
// initial-scale does the same).
func initialScale(s *api.FunctionSpec) int32 {
	return max(s.Scaling.MinScale, 1)
}

// PutFunction writes a Function with the deploy semantics users expect:
//
//   - a new spec, or one that differs from the stored one, makes a new
//     immutable Revision NAME-0000N (N = the function's generation), a Scale
//     for it, and moves the function's Traffic to it, all in one etcd
//     transaction;
//   - an unchanged spec makes no revision: deploys are idempotent;
//   - a ResourceVersion on f makes the write conditional (api.ErrConflict).
//
// f's spec must be defaulted and valid.
func (s *Store) PutFunction(ctx context.Context, f *api.Function, mode WriteMode) (*FunctionResult, error) {
	m := &f.Metadata
	if m.Namespace == "" {
		m.Namespace = api.DefaultNamespace
	}
	want, err := ParseVersion(m.ResourceVersion)
	if err != nil {
		return nil, err
	}
	fkey, _ := Functions.Key(m.Namespace, m.Name)
	for {
		resp, err := s.c.Get(ctx, fkey)
		if err != nil {
			return nil, fmt.Errorf("deploy function %s: %w", m.Name, err)
		}
		var cur *api.Function
		var curRev int64
		if len(resp.Kvs) > 0 {
			curRev = resp.Kvs[0].ModRevision
			if cur, err = decode[api.Function](Functions, resp.Kvs[0].Value, curRev); err != nil {
				return nil, err
			}
		}
		switch {
		case cur != nil && mode == CreateOnly:
			return nil, alreadyExists(Functions, m.Name)
		case cur == nil && mode == ReplaceOnly:
			return nil, notFound(Functions, m.Name)
		case cur != nil && want != 0 && curRev != want:
			return nil, conflict(Functions, m.Name)
		case cur == nil && want != 0:
			return nil, notFound(Functions, m.Name)
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
			if same {
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
						return nil, conflict(Functions, m.Name)
					}
					continue
				}
				next.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
				next.Kind = api.KindFunction
				return &FunctionResult{Function: &next}, nil
			}
		} else {
			s.stampNew(Functions, &next)
			next.Metadata.Generation = 0
		}
		next.Metadata.Generation++
		revName := api.RevisionName(m.Name, next.Metadata.Generation)
		next.Status.LatestRevision = revName

		ops, err := s.revisionOps(&next, revName)
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
				return nil, conflict(Functions, m.Name)
			}
			if mode == CreateOnly {
				return nil, alreadyExists(Functions, m.Name)
			}
			continue // someone else deployed in between: decide again on what they wrote
		}
		next.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
		next.Kind = api.KindFunction
		return &FunctionResult{Function: &next, Created: cur == nil, Revision: revName}, nil
	}
}

// revisionOps are the writes that go with a new revision of fn: the
// Revision itself, its Scale, and the function's Traffic moved to it.
func (s *Store) revisionOps(fn *api.Function, revName string) ([]clientv3.Op, error) {
	ns := fn.Metadata.Namespace
	labels := map[string]string{api.LabelFunction: fn.Metadata.Name}
	rev := &api.Revision{
		Metadata: api.ObjectMeta{Name: revName, Namespace: ns, Labels: labels},
		Spec:     api.RevisionSpec{Function: fn.Metadata.Name, Number: fn.Metadata.Generation, Template: fn.Spec},
	}
	s.stampNew(Revisions, rev)
	scale := &api.Scale{
		Metadata: api.ObjectMeta{Name: revName, Namespace: ns, Labels: map[string]string{api.LabelFunction: fn.Metadata.Name, api.LabelRevision: revName}},
		Spec:     api.ScaleSpec{Replicas: initialScale(&fn.Spec)},
	}
	s.stampNew(Scales, scale)
	traffic := &api.Traffic{
		Metadata: api.ObjectMeta{Name: fn.Metadata.Name, Namespace: ns, Labels: labels},
		Spec:     api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: revName, Percent: 100}}},
	}
	s.stampNew(Traffics, traffic)

	var ops []clientv3.Op
	for _, o := range []struct {
		k   Kind
		obj api.Object
	}{{Revisions, rev}, {Scales, scale}, {Traffics, traffic}} {
		val, err := encode(o.obj)
		if err != nil {
			return nil, err
		}
		key, _ := o.k.Key(ns, o.obj.GetMetadata().Name)
		ops = append(ops, clientv3.OpPut(key, val))
	}
	return ops, nil
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
func (s *Store) DeleteFunction(ctx context.Context, ns, name, resourceVersion string) error {
	want, err := ParseVersion(resourceVersion)
	if err != nil {
		return err
	}
	fkey, ok := Functions.Key(ns, name)
	if !ok {
		return notFound(Functions, name)
	}
	guard := clientv3.Compare(clientv3.CreateRevision(fkey), ">", 0)
	if want != 0 {
		guard = clientv3.Compare(clientv3.ModRevision(fkey), "=", want)
	}
	tkey, _ := Traffics.Key(ns, name)
	resp, err := s.c.Txn(ctx).If(guard).Then(
		clientv3.OpDelete(fkey),
		clientv3.OpDelete(tkey),
		clientv3.OpDelete(Revisions.FunctionPrefix(ns, name), clientv3.WithPrefix()),
		clientv3.OpDelete(Scales.FunctionPrefix(ns, name), clientv3.WithPrefix()),
		clientv3.OpDelete(Replicas.FunctionPrefix(ns, name), clientv3.WithPrefix()),
	).Else(clientv3.OpGet(fkey)).Commit()
	if err != nil {
		return fmt.Errorf("delete function %s: %w", name, err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return notFound(Functions, name)
		}
		return conflict(Functions, name)
	}
	return nil
}
