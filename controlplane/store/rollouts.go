package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// A function's traffic changes through three writers: a deploy's
// promotion (PromoteRevision), the rollout controller's canary steps
// (WriteRollout), and users (a Traffic PUT, Rollback). The Rollout object
// records what the first two did, in the same transactions as the Traffic,
// so that each can tell its own split from a user's.

// WriteRollout writes a rollout's new state, and with it the traffic it
// sets when t is not nil, in one transaction that succeeds only if
// neither the Rollout nor the Traffic changed since they were read (their
// ResourceVersions; api.ErrConflict otherwise). It returns the rollout as
// written.
func (s *Store) WriteRollout(ctx context.Context, ro *api.Rollout, t *api.Traffic) (*api.Rollout, error) {
	key := api.KeyOf(ro)
	okey, _ := EtcdKey(api.RolloutKind, key)
	tkey, _ := EtcdKey(api.TrafficKind, key)
	guards := make([]clientv3.Cmp, 0, 2)
	ops := make([]clientv3.Op, 0, 2)
	add := func(k string, o api.Object) error {
		v, err := ParseVersion(o.GetMetadata().ResourceVersion)
		if err != nil {
			return err
		}
		if v == 0 {
			return api.BadRequest("%s %q: write what was read, with its resourceVersion", o.ObjectKind().Name, key.Name)
		}
		val, err := encode(o)
		if err != nil {
			return err
		}
		guards = append(guards, clientv3.Compare(clientv3.ModRevision(k), "=", v))
		ops = append(ops, clientv3.OpPut(k, val))
		return nil
	}
	if err := add(okey, ro); err != nil {
		return nil, err
	}
	if t != nil {
		if err := add(tkey, t); err != nil {
			return nil, err
		}
	}
	tr, err := s.c.Txn(ctx).If(guards...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("write rollout %s: %w", key.Name, err)
	}
	if !tr.Succeeded {
		return nil, conflict(api.RolloutKind, key.Name)
	}
	out := *ro
	out.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
	out.Kind = api.KindRollout
	if t != nil {
		t.Metadata.ResourceVersion = out.Metadata.ResourceVersion
	}
	return &out, nil
}

// functionState is a function with its traffic and rollout, read at one
// etcd revision, and the raw values for guards.
type functionState struct {
	fn      *api.Function
	traffic *api.Traffic
	rollout *api.Rollout
	revs    []api.Revision
	// fkvs, tkvs and okvs are the raw reads, for guardOf.
	fkvs, tkvs, okvs []*mvccpb.KeyValue
	fkey, tkey, okey string
}

// readFunctionState reads a function, its traffic, its rollout and its
// revisions in one transaction.
func (s *Store) readFunctionState(ctx context.Context, function api.Key) (*functionState, error) {
	st := &functionState{}
	st.fkey, _ = EtcdKey(api.FunctionKind, function)
	st.tkey, _ = EtcdKey(api.TrafficKind, function)
	st.okey, _ = EtcdKey(api.RolloutKind, function)
	rprefix, err := Scope{Namespace: function.Namespace, Function: function.Name}.prefix(api.RevisionKind)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Txn(ctx).Then(clientv3.OpGet(st.fkey), clientv3.OpGet(st.tkey), clientv3.OpGet(st.okey),
		clientv3.OpGet(rprefix, clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, fmt.Errorf("read function %s: %w", function.Name, err)
	}
	st.fkvs = resp.Responses[0].GetResponseRange().Kvs
	st.tkvs = resp.Responses[1].GetResponseRange().Kvs
	st.okvs = resp.Responses[2].GetResponseRange().Kvs
	if len(st.fkvs) == 0 {
		return nil, notFound(api.FunctionKind, function.Name)
	}
	if st.fn, err = decode[api.Function](st.fkvs[0].Value, st.fkvs[0].ModRevision); err != nil {
		return nil, err
	}
	if len(st.tkvs) > 0 {
		if st.traffic, err = decode[api.Traffic](st.tkvs[0].Value, st.tkvs[0].ModRevision); err != nil {
			return nil, err
		}
	}
	if len(st.okvs) > 0 {
		if st.rollout, err = decode[api.Rollout](st.okvs[0].Value, st.okvs[0].ModRevision); err != nil {
			return nil, err
		}
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		r, err := decode[api.Revision](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		st.revs = append(st.revs, *r)
	}
	return st, nil
}

// hasRevision reports whether the function has revision name.
func (st *functionState) hasRevision(name string) bool {
	return slices.ContainsFunc(st.revs, func(r api.Revision) bool { return r.Metadata.Name == name })
}

// RollbackResult is what Rollback did.
type RollbackResult struct {
	// Rollout is the rollout the rollback wrote.
	Rollout *api.Rollout
	// From is the revision that had the (largest share of the) traffic.
	From string
}

// RollbackTarget is where a rollback of the function in st goes when the
// user names no revision: the revision that had the traffic before the
// current rollout, as `kubectl rollout undo` goes to the revision before.
// It fails with a 409 that says what to do when there is none, or when the
// traffic is there already.
func rollbackTarget(st *functionState) (string, error) {
	ro, name := st.rollout, st.fn.Metadata.Name
	if ro == nil || ro.Spec.From == "" {
		return "", api.NewError(http.StatusConflict, api.ReasonConflict,
			"function %q has no rollout to undo: name the revision, surge rollback %s --to REV", name, name)
	}
	if ro.Status.Phase == api.RolloutRolledBack {
		return "", api.NewError(http.StatusConflict, api.ReasonConflict,
			"function %q: the rollout of %s was rolled back already, to %s (%s): name another revision with --to", name,
			ro.Spec.Revision, ro.Spec.From, ro.Status.Reason)
	}
	return ro.Spec.From, nil
}

// RollbackTarget is where Rollback(ctx, function, to) would move the
// traffic: to itself, or, when to is empty, the revision before the
// function's current rollout. It fails as Rollback would when there is
// none, when the revision does not exist, or when all the traffic is on
// it already. The API activates the revision it names before the
// rollback, so that it scales up from zero at once.
func (s *Store) RollbackTarget(ctx context.Context, function api.Key, to string) (string, error) {
	st, err := s.readFunctionState(ctx, function)
	if err != nil {
		return "", err
	}
	return st.rollbackTo(to)
}

// rollbackTo checks a rollback of the function in st to revision to (or,
// when empty, to the revision before the current rollout) and returns
// where it goes.
func (st *functionState) rollbackTo(to string) (string, error) {
	name := st.fn.Metadata.Name
	if to == "" {
		var err error
		if to, err = rollbackTarget(st); err != nil {
			return "", err
		}
	}
	if !st.hasRevision(to) {
		e := api.NewError(http.StatusNotFound, api.ReasonNotFound,
			"revision %q of function %q does not exist: `surge revisions %s` lists them", to, name, name)
		e.Field = "revision"
		return "", e
	}
	if api.SameShares(st.traffic, map[string]int32{to: 100}) {
		return "", api.NewError(http.StatusConflict, api.ReasonConflict,
			"function %q: all of its traffic is on %s already", name, to)
	}
	return to, nil
}

// Rollback moves all of a function's traffic to revision to (or, when to
// is empty, to the revision before the current rollout) at once, keeping
// its tags, and records it as a rollout (Spec.Rollback) that ends any
// canary in progress; in one transaction, guarded by the function's
// traffic and rollout as read. It does not wait for the revision to have a
// Ready replica: the caller activates it first, so that requests wait for
// it no longer than a gateway's activation.
func (s *Store) Rollback(ctx context.Context, function api.Key, to string) (*RollbackResult, error) {
	st, err := s.readFunctionState(ctx, function)
	if err != nil {
		return nil, err
	}
	name := function.Name
	if to, err = st.rollbackTo(to); err != nil {
		return nil, err
	}
	from := api.MainTarget(st.traffic)
	now := s.clock.Now().UTC()
	reason := fmt.Sprintf("rolled back from %s by a user", from)
	if ro := st.rollout; ro != nil && ro.Status.Phase == api.RolloutProgressing {
		reason = fmt.Sprintf("the canary of %s was rolled back by a user at %d%%", ro.Spec.Revision, ro.Status.Percent)
	}
	next := &api.Rollout{
		Metadata: api.ObjectMeta{Name: name, Namespace: function.Namespace, Labels: map[string]string{api.LabelFunction: name}},
		Spec:     api.RolloutSpec{Revision: to, From: from, Rollback: true},
		Status: api.RolloutStatus{Phase: api.RolloutSucceeded, Percent: 100, Started: now, StepStarted: now, Finished: now,
			Reason: reason},
	}
	if from == to {
		next.Spec.From = ""
	}
	if ro := st.rollout; ro != nil {
		next.Metadata.UID, next.Metadata.CreationTimestamp = ro.Metadata.UID, ro.Metadata.CreationTimestamp
		next.Metadata.Generation = ro.Metadata.Generation + 1
	} else {
		s.stampNew(next)
	}
	traffic := allTrafficTo(st.fn, to)
	if st.traffic != nil {
		traffic.Metadata = st.traffic.Metadata
		traffic.Metadata.ResourceVersion = ""
		traffic.Spec.Targets = api.Split(st.traffic, map[string]int32{to: 100})
	} else {
		s.stampNew(traffic)
	}
	ops := make([]clientv3.Op, 0, 2)
	for k, o := range map[string]api.Object{st.tkey: traffic, st.okey: next} {
		val, err := encode(o)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(k, val))
	}
	tr, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(st.fkey), ">", 0),
		guardOf(st.tkey, st.tkvs), guardOf(st.okey, st.okvs)).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("roll back function %s: %w", name, err)
	}
	if !tr.Succeeded {
		return nil, conflict(api.FunctionKind, name)
	}
	next.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
	next.Kind = api.KindRollout
	return &RollbackResult{Rollout: next, From: from}, nil
}

// DeleteRevision removes a revision and its Scale (the replica controller
// then removes its replicas), in one transaction guarded by its
// function's traffic and rollout as read. It refuses, with a 409 that says
// why, a revision that takes traffic or has a tag, the function's latest,
// and the revision and baseline of its rollout (a rollback's way back).
func (s *Store) DeleteRevision(ctx context.Context, key api.Key) error {
	fnName, _, ok := api.ParseRevisionName(key.Name)
	if !ok {
		return notFound(api.RevisionKind, key.Name)
	}
	st, err := s.readFunctionState(ctx, api.Key{Namespace: key.Namespace, Name: fnName})
	if err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return notFound(api.RevisionKind, key.Name)
		}
		return err
	}
	if !st.hasRevision(key.Name) {
		return notFound(api.RevisionKind, key.Name)
	}
	if why := api.KeepsRevision(st.fn, st.traffic, st.rollout, key.Name); why != "" {
		return api.NewError(http.StatusConflict, api.ReasonConflict, "revision %q is kept: %s", key.Name, why)
	}
	rkey, _ := EtcdKey(api.RevisionKind, key)
	skey, _ := EtcdKey(api.ScaleKind, key)
	tr, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(st.fkey), "=", st.fkvs[0].ModRevision),
		guardOf(st.tkey, st.tkvs), guardOf(st.okey, st.okvs), clientv3.Compare(clientv3.CreateRevision(rkey), ">", 0)).
		Then(clientv3.OpDelete(rkey), clientv3.OpDelete(skey)).Commit()
	if err != nil {
		return fmt.Errorf("delete revision %s: %w", key.Name, err)
	}
	if !tr.Succeeded {
		return conflict(api.RevisionKind, key.Name)
	}
	return nil
}

// PruneRevisions deletes the revisions of a function that a policy of
// keeping keep of them deletes (api.Prunable: never one that takes traffic,
// has a tag, is the latest, or a rollout's way back), with their Scales, in
// one transaction guarded by the function's state as read. It returns the
// revisions it deleted, oldest first.
func (s *Store) PruneRevisions(ctx context.Context, function api.Key, keep int) ([]string, error) {
	st, err := s.readFunctionState(ctx, function)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(st.revs))
	for i, r := range st.revs {
		names[i] = r.Metadata.Name
	}
	gone := api.Prunable(st.fn, st.traffic, st.rollout, names, keep)
	if len(gone) == 0 {
		return nil, nil
	}
	ops := make([]clientv3.Op, 0, 2*len(gone))
	for _, name := range gone {
		k := api.Key{Namespace: function.Namespace, Name: name}
		rkey, _ := EtcdKey(api.RevisionKind, k)
		skey, _ := EtcdKey(api.ScaleKind, k)
		ops = append(ops, clientv3.OpDelete(rkey), clientv3.OpDelete(skey))
	}
	tr, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(st.fkey), "=", st.fkvs[0].ModRevision),
		guardOf(st.tkey, st.tkvs), guardOf(st.okey, st.okvs)).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("prune revisions of %s: %w", function.Name, err)
	}
	if !tr.Succeeded {
		return nil, conflict(api.FunctionKind, function.Name)
	}
	return gone, nil
}
