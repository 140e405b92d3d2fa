package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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
				rest, err := sameRest(&cur.Spec, &f.Spec)
				if err != nil {
					return nil, err
				}
				if rest && maps.Equal(cur.Metadata.Labels, f.Metadata.Labels) {
					return &FunctionResult{Function: cur}, nil
				}
				// Labels, the canary, the revisions kept or how clients
				// reach the function only: rewrite
				// the function, make no revision.
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
		Spec: api.RevisionSpec{Function: fn.Metadata.Name, Number: fn.Metadata.Generation, Template: api.RevisionTemplate(&fn.Spec),
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

// PromoteRevision ends the wait of a deploy's revision for a Ready
// replica: the function records revName as its LatestReadyRevision, and
// its traffic starts moving to revName, in the same transaction — all of
// it at once, or, when the function's spec has a canary, its first step,
// which the rollout controller takes on from there. The Rollout object
// records either (its From is where `surge rollback` returns). It does so
// only while revName is still the function's latest revision and not yet
// promoted, and only if neither the function, its Traffic nor its Rollout
// changed since they were read (else api.ErrConflict: read again).
//
// The traffic moves only if nobody set it since the deploy made revName:
// a split or a rollback a user wrote while the revision was starting is
// the user's word and stays; the revision is then only recorded as ready.
// What the rollout controller wrote (a canary's step, a tag added since)
// is not a user's split: a canary of an older revision still in progress
// is superseded, and the new revision rolls out from the revision that
// canary started from. PromoteRevision reports whether the traffic
// followed the deploy: moved toward revName, or found all on it already (a
// new function's first revision), in which case nothing but the function
// is written.
func (s *Store) PromoteRevision(ctx context.Context, function api.Key, revName string) (bool, error) {
	fnName := function.Name
	fkey, _ := EtcdKey(api.FunctionKind, function)
	tkey, _ := EtcdKey(api.TrafficKind, function)
	okey, _ := EtcdKey(api.RolloutKind, function)
	rkey, ok := EtcdKey(api.RevisionKind, api.Key{Namespace: function.Namespace, Name: revName})
	if !ok {
		return false, notFound(api.RevisionKind, revName)
	}
	resp, err := s.c.Txn(ctx).Then(clientv3.OpGet(fkey), clientv3.OpGet(tkey), clientv3.OpGet(rkey), clientv3.OpGet(okey)).Commit()
	if err != nil {
		return false, fmt.Errorf("promote revision %s: %w", revName, err)
	}
	fkvs := resp.Responses[0].GetResponseRange().Kvs
	tkvs := resp.Responses[1].GetResponseRange().Kvs
	rkvs := resp.Responses[2].GetResponseRange().Kvs
	okvs := resp.Responses[3].GetResponseRange().Kvs
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
	prevReady := fn.Status.LatestReadyRevision
	fn.Status.LatestReadyRevision = revName
	fval, err := encode(fn)
	if err != nil {
		return false, err
	}
	var cur *api.Traffic
	if len(tkvs) > 0 {
		if cur, err = decode[api.Traffic](tkvs[0].Value, tkvs[0].ModRevision); err != nil {
			return false, err
		}
	}
	var ro *api.Rollout
	if len(okvs) > 0 {
		if ro, err = decode[api.Rollout](okvs[0].Value, okvs[0].ModRevision); err != nil {
			return false, err
		}
	}
	guards := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(fkey), "=", fkvs[0].ModRevision), guardOf(tkey, tkvs), guardOf(okey, okvs)}
	ops := []clientv3.Op{clientv3.OpPut(fkey, fval)}

	created := rkvs[0].CreateRevision
	if cur != nil && userSetTraffic(cur, tkvs[0].ModRevision, ro, okvs, prevReady, created) {
		return false, s.commit(ctx, fnName, revName, guards, ops)
	}
	if cur != nil && api.SameShares(cur, map[string]int32{revName: 100}) {
		return true, s.commit(ctx, fnName, revName, guards, ops) // already all on it: the traffic followed
	}
	from := api.MainTarget(cur)
	if ro != nil && ro.Status.Phase == api.RolloutProgressing && ro.Spec.From != "" {
		from = ro.Spec.From // a canary in progress is superseded: start from where it started
	}
	now := s.clock.Now().UTC()
	next := &api.Rollout{
		Metadata: api.ObjectMeta{Name: fnName, Namespace: function.Namespace, Labels: map[string]string{api.LabelFunction: fnName}},
		Spec:     api.RolloutSpec{Revision: revName},
		Status:   api.RolloutStatus{Phase: api.RolloutSucceeded, Percent: 100, Started: now, StepStarted: now, Finished: now},
	}
	if from != revName {
		next.Spec.From = from
	}
	shares := map[string]int32{revName: 100}
	if c := fn.Spec.Canary; c != nil && next.Spec.From != "" && len(c.Steps) > 0 && c.Steps[0] < 100 {
		strategy := *c
		strategy.Steps = append([]int32(nil), c.Steps...)
		next.Spec.Canary = &strategy
		next.Status.Phase, next.Status.Percent, next.Status.Finished = api.RolloutProgressing, c.Steps[0], time.Time{}
		shares = next.Shares()
	}
	traffic := allTrafficTo(fn, revName)
	if cur != nil {
		traffic.Metadata = cur.Metadata
		traffic.Metadata.ResourceVersion = ""
		traffic.Spec.Targets = api.Split(cur, shares)
	} else {
		s.stampNew(traffic)
	}
	if ro != nil {
		next.Metadata.UID, next.Metadata.CreationTimestamp = ro.Metadata.UID, ro.Metadata.CreationTimestamp
		next.Metadata.Generation = ro.Metadata.Generation + 1
	} else {
		s.stampNew(next)
	}
	for k, o := range map[string]api.Object{tkey: traffic, okey: next} {
		val, err := encode(o)
		if err != nil {
			return false, err
		}
		ops = append(ops, clientv3.OpPut(k, val))
	}
	return true, s.commit(ctx, fnName, revName, guards, ops)
}

// userSetTraffic reports whether traffic t (at mod revision tRev) is a
// user's word that a deploy's revision, created at etcd revision created,
// must not override: it was written after the revision was made, and it is
// neither the split the last rollout ro (at okvs) left nor, without one,
// all of it on the function's ready revision before (prevReady). A
// rollback a user asked for after the revision was made is the user's
// word whatever its split.
func userSetTraffic(t *api.Traffic, tRev int64, ro *api.Rollout, okvs []*mvccpb.KeyValue, prevReady string, created int64) bool {
	if tRev <= created {
		return false
	}
	if ro != nil {
		if ro.Spec.Rollback && okvs[0].ModRevision > created {
			return true
		}
		shares := ro.Shares()
		return shares == nil || !api.SameShares(t, shares)
	}
	return prevReady == "" || !api.SameShares(t, map[string]int32{prevReady: 100})
}

// guardOf is the comparison that fails a transaction if the key read as
// kvs (one value, or none) changed since.
func guardOf(key string, kvs []*mvccpb.KeyValue) clientv3.Cmp {
	if len(kvs) == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)
}

// commit writes a promotion's ops if its guards hold.
func (s *Store) commit(ctx context.Context, fnName, revName string, guards []clientv3.Cmp, ops []clientv3.Op) error {
	tr, err := s.c.Txn(ctx).If(guards...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("promote revision %s: %w", revName, err)
	}
	if !tr.Succeeded {
		return conflict(api.FunctionKind, fnName)
	}
	return nil
}

// sameSpec reports whether two specs make the same revision: whether
// their templates (api.RevisionTemplate) have the same JSON form, which is
// what is stored.
func sameSpec(a, b *api.FunctionSpec) (bool, error) {
	ta, tb := api.RevisionTemplate(a), api.RevisionTemplate(b)
	return sameJSON(&ta, &tb)
}

// sameRest reports whether two specs that make the same revision are the
// same in what revisions do not keep: the canary, KeepRevisions and
// HTTPSRedirect.
func sameRest(a, b *api.FunctionSpec) (bool, error) {
	if a.KeepRevisions != b.KeepRevisions || a.HTTPSRedirect != b.HTTPSRedirect {
		return false, nil
	}
	return sameJSON(a.Canary, b.Canary)
}

// sameJSON compares two values by their JSON form.
func sameJSON(a, b any) (bool, error) {
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

// DeleteFunction removes a function with its revisions, traffic, rollout,
// scales and replicas, in one transaction. A non-empty resourceVersion makes it
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
	okey, _ := EtcdKey(api.RolloutKind, key)
	ops := []clientv3.Op{clientv3.OpDelete(fkey), clientv3.OpDelete(tkey), clientv3.OpDelete(okey)}
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
