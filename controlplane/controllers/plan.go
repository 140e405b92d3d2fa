// Package controllers holds the control plane's reconcilers: the replica
// controller (Scale → Replicas), the scheduler's shell (unbound Replicas →
// nodes), the node controller (stale nodes → dead, their replicas
// replaced) and the rollout controller (a deploy's revision with a Ready
// replica → the function's traffic). One server runs them, the leader
// elected through etcd (package leader).
//
// Each is level-triggered, as in Kubernetes: a pass looks at the whole
// state, computes the difference with pure functions (plan.go, and
// package scheduler for placements), and writes it. The state is a cache
// that one watch of the store keeps current (cache.go), synced to etcd's
// current revision before each pass, so that a pass reads nothing from
// etcd however large the cluster. A pass runs on any change under the
// store's prefix and every resync period, so a missed event or a crash
// between writes is repaired by the next pass.
package controllers

import (
	"slices"
	"strings"
	"time"

	"github.com/surgeplatform/surge/api"
)

// replicaPlan is what the replica controller does for one revision.
type replicaPlan struct {
	create int
	remove []string
}

// active reports whether a replica counts toward its revision's scale:
// every phase but Failed and Terminating.
func active(r *api.Replica) bool {
	return r.Status.Phase != api.ReplicaFailed && r.Status.Phase != api.ReplicaTerminating
}

// removalRank orders replicas for scale-down: the cheapest to lose first —
// unbound, then not yet ready, then the youngest (the oldest have proven
// themselves and have warm caches).
func removalRank(r *api.Replica) int {
	switch {
	case r.Spec.NodeName == "":
		return 0
	case r.Status.Phase != api.ReplicaReady:
		return 1
	}
	return 2
}

// planReplicas compares a revision's desired scale with its replicas.
// Failed replicas are removed and replaced.
//
// Replicas bound to a draining node are leaving: the revision gets
// replacements for them elsewhere first (draining nodes take no new
// replicas), and a leaving replica is removed only once the revision's
// other Ready replicas make up for it — a drain never lowers a
// revision's Ready count below what it asks for (or what it had, when
// that is less). A leaving replica that is not Ready serves nothing and
// goes at once.
func planReplicas(desired int32, replicas map[api.Key]*api.Replica, draining func(node string) bool) replicaPlan {
	var p replicaPlan
	// Most revisions have what they ask for: say so without allocating,
	// as every pass asks of every revision.
	settled := len(replicas) == int(desired)
	for _, r := range replicas {
		if !settled {
			break
		}
		settled = active(r) && (r.Spec.NodeName == "" || !draining(r.Spec.NodeName))
	}
	if settled {
		return p
	}
	var staying, leaving []*api.Replica
	for _, r := range replicas {
		switch {
		case r.Status.Phase == api.ReplicaFailed:
			p.remove = append(p.remove, r.Metadata.Name)
		case !active(r):
		case r.Spec.NodeName != "" && draining(r.Spec.NodeName):
			leaving = append(leaving, r)
		default:
			staying = append(staying, r)
		}
	}
	n := int(desired)
	switch {
	case len(staying) < n:
		p.create = n - len(staying)
	case len(staying) > n:
		slices.SortFunc(staying, func(a, b *api.Replica) int {
			if ra, rb := removalRank(a), removalRank(b); ra != rb {
				return ra - rb
			}
			if c := b.Metadata.CreationTimestamp.Compare(a.Metadata.CreationTimestamp); c != 0 {
				return c // the youngest first
			}
			return strings.Compare(a.Metadata.Name, b.Metadata.Name)
		})
		for _, r := range staying[:len(staying)-n] {
			p.remove = append(p.remove, r.Metadata.Name)
		}
		staying = staying[len(staying)-n:]
	}
	readyStaying := 0
	for _, r := range staying {
		if r.Status.Phase == api.ReplicaReady {
			readyStaying++
		}
	}
	slices.SortFunc(leaving, func(a, b *api.Replica) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	keep := max(0, n-readyStaying)
	for _, r := range leaving {
		if r.Status.Phase == api.ReplicaReady && keep > 0 {
			keep--
			continue
		}
		p.remove = append(p.remove, r.Metadata.Name)
	}
	slices.Sort(p.remove)
	return p
}

// nodeVerdict decides whether a live node is dead at now, from its last
// heartbeat and gossip's view: dead when gossip says so and the node has
// also not beaten for confirm (gossip's fast detector misfires on a
// starved or lossy machine, and moving every replica of a live node is an
// outage), or when it has not beaten for timeout whatever gossip says (a
// node whose gossip still answers but who cannot reach the API). A node
// that never beat is not judged. recheck is when the verdict could turn
// if nothing else changes, so that the controller looks again then; zero
// when dead is true or nothing could.
func nodeVerdict(lastSeen time.Time, gossipDead bool, now time.Time, confirm, timeout time.Duration) (dead bool, recheck time.Time) {
	if lastSeen.IsZero() {
		return false, time.Time{}
	}
	age := now.Sub(lastSeen)
	if age > timeout || (gossipDead && age > confirm) {
		return true, time.Time{}
	}
	if gossipDead {
		return false, lastSeen.Add(confirm)
	}
	return false, lastSeen.Add(timeout)
}
