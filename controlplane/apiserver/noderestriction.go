package apiserver

// NodeRestriction, as Kubernetes' admission plugin of that name: a node
// (a principal authenticated by its client certificate) may change only
// its own Node and lease and the status of the replicas bound to it, and
// what it reports is checked against what the control plane assigned it
// (its address, its pod subnet). The role check (auth.Allowed) has already
// kept it from every other kind and resource.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// asNode returns the request's principal when it is a node.
func asNode(ctx context.Context) (auth.Principal, bool) {
	p := principal(ctx)
	return p, p.Node != ""
}

// notByNodes refuses a create or replace to nodes.
func notByNodes[T any](op func(context.Context, *T) (*T, int, error), what string) func(context.Context, *T) (*T, int, error) {
	return func(ctx context.Context, obj *T) (*T, int, error) {
		if p, ok := asNode(ctx); ok {
			return nil, 0, forbidden("%s may not %s: the control plane does", p.Name(), what)
		}
		return op(ctx, obj)
	}
}

// notByNodesDelete refuses a delete to nodes.
func notByNodesDelete(op func(context.Context, api.Key, string) error, what string) func(context.Context, api.Key, string) error {
	return func(ctx context.Context, key api.Key, rv string) error {
		if p, ok := asNode(ctx); ok {
			return forbidden("%s may not %s: the control plane does", p.Name(), what)
		}
		return op(ctx, key, rv)
	}
}

// ownNode refuses a node's write to another node's objects.
func ownNode(p auth.Principal, name, what string) error {
	if name != p.Node {
		return forbidden("%s may not %s of node %s: a node writes only its own", p.Name(), what, name)
	}
	return nil
}

// createNode registers a node with a subnet of the pod CIDR. A node
// registers only itself, with its status checked (checkNodeStatus); the
// spec is the control plane's.
func (s *Server) createNode(ctx context.Context, n *api.Node) (*api.Node, int, error) {
	if err := s.checkNodeStatus(ctx, n, "register"); err != nil {
		return nil, 0, err
	}
	if _, ok := asNode(ctx); ok {
		n.Spec = api.NodeSpec{}
	}
	out, err := s.cfg.Store.CreateNode(ctx, n, s.cfg.PodCIDR, s.cfg.NodeSubnetBits)
	return out, http.StatusCreated, err
}

// nodeStatus writes a node's status, keeping its spec.
func (s *Server) nodeStatus(ctx context.Context, n *api.Node) (*api.Node, error) {
	if err := api.ValidateNode(n); err != nil {
		return nil, invalid(api.NodeKind, n.Metadata.Name, err)
	}
	if err := s.checkNodeStatus(ctx, n, "write the status"); err != nil {
		return nil, err
	}
	return store.UpdateNodeStatus(ctx, s.cfg.Store, n)
}

// checkNodeStatus checks a node's status as written: its agent URL must be
// https at its address (the only URL the API server will dial), and, when
// a node writes it, the node must be itself, at the address it was
// certified for, and alive (only the node controller says a node is
// dead).
func (s *Server) checkNodeStatus(ctx context.Context, n *api.Node, what string) error {
	st := &n.Status
	p, isNode := asNode(ctx)
	if isNode {
		if err := ownNode(p, n.Metadata.Name, what); err != nil {
			return err
		}
		if st.Address == "" {
			st.Address = p.Address.String()
		}
		if a, err := netip.ParseAddr(st.Address); err != nil || a.Unmap() != p.Address {
			e := forbidden("%s is at %s, the address it joined from: it may not report %q", p.Name(), p.Address, st.Address)
			e.Field = "status.address"
			return e
		}
		if st.State != "" && st.State != api.NodeAlive {
			e := forbidden("%s may not report itself %s: only the node controller decides that a node is dead", p.Name(), st.State)
			e.Field = "status.state"
			return e
		}
	}
	if st.AgentURL != "" {
		addr, _ := netip.ParseAddr(st.Address)
		if !api.ValidAgentURL(st.AgentURL, addr.Unmap()) {
			msg := fmt.Sprintf("%q must be https://ADDRESS:PORT at the node's address %q, with nothing after the port", st.AgentURL, st.Address)
			if isNode {
				e := forbidden("%s may not report agent URL %s", p.Name(), msg)
				e.Field = "status.agentURL"
				return e
			}
			return api.Invalid(api.KindNode, n.Metadata.Name, api.FieldErrors{{Field: "status.agentURL", Message: msg}})
		}
	}
	if st.MetricsURL != "" {
		addr, _ := netip.ParseAddr(st.Address)
		u, err := api.NormalizeMetricsURL(st.MetricsURL, addr)
		if err != nil {
			if isNode {
				e := forbidden("%s may not report metrics URL %v", p.Name(), err)
				e.Field = "status.metricsURL"
				return e
			}
			return api.Invalid(api.KindNode, n.Metadata.Name, api.FieldErrors{{Field: "status.metricsURL", Message: err.Error()}})
		}
		st.MetricsURL = u
	}
	return nil
}

// replicaPhases are the phases a status may report.
var replicaPhases = map[api.ReplicaPhase]bool{"": true, api.ReplicaPending: true, api.ReplicaStarting: true,
	api.ReplicaReady: true, api.ReplicaTerminating: true, api.ReplicaFailed: true}

// validateReplicaStatus checks the form of a replica's status: a known
// phase, an IP that is an IP, a port that is a port, and, for Ready, both
// (the gateway sends requests there).
func validateReplicaStatus(st *api.ReplicaStatus) api.FieldErrors {
	var errs api.FieldErrors
	if !replicaPhases[st.Phase] {
		errs = append(errs, api.FieldError{Field: "status.phase", Message: fmt.Sprintf("%q is not a phase: want Pending, Starting, Ready, Terminating or Failed", st.Phase)})
	}
	if st.IP != "" {
		if _, err := netip.ParseAddr(st.IP); err != nil {
			errs = append(errs, api.FieldError{Field: "status.ip", Message: fmt.Sprintf("%q is not an IP address", st.IP)})
		}
	}
	if st.Port < 0 || st.Port > 65535 {
		errs = append(errs, api.FieldError{Field: "status.port", Message: fmt.Sprintf("%d is not a port", st.Port)})
	}
	if st.Phase == api.ReplicaReady && (st.IP == "" || st.Port == 0) {
		errs = append(errs, api.FieldError{Field: "status.phase", Message: "Ready needs the replica's IP and port, where the gateways send its requests"})
	}
	return errs
}

// replicaAddressAllowed reports whether a replica of node (at nodeAddr)
// may serve at ip: an address of the node's pod subnet, or, in host
// networking, the node's own address, or loopback when the node itself is
// at loopback (Surge on one machine). Anything else would send the
// function's traffic where the node has no business sending it.
func replicaAddressAllowed(ip netip.Addr, node *api.Node, nodeAddr netip.Addr) bool {
	ip = ip.Unmap()
	if subnet, err := netip.ParsePrefix(node.Spec.PodSubnet); err == nil && subnet.Contains(ip) {
		return true
	}
	return ip == nodeAddr || (ip.IsLoopback() && nodeAddr.IsLoopback())
}

// maxStatusRetries bounds how often a node's status write is tried again
// when the replica changed between the check and the write.
const maxStatusRetries = 5

// replicaStatus writes a replica's status. A node writes only the status
// of a replica bound to it, at an address of its own: the check and the
// write are one compare-and-swap on the replica's version, so a replica
// cannot be rebound in between.
func (s *Server) replicaStatus(ctx context.Context, r *api.Replica) (*api.Replica, error) {
	if errs := validateReplicaStatus(&r.Status); len(errs) > 0 {
		return nil, api.Invalid(api.KindReplica, r.Metadata.Name, errs)
	}
	p, isNode := asNode(ctx)
	if !isNode {
		return store.UpdateReplicaStatus(ctx, s.cfg.Store, r)
	}
	if r.Status.IP != "" {
		node, err := store.Get[api.Node](ctx, s.cfg.Store, api.Key{Name: p.Node})
		if err != nil {
			return nil, fmt.Errorf("status of replica %s: node %s: %w", r.Metadata.Name, p.Node, err)
		}
		if ip, _ := netip.ParseAddr(r.Status.IP); !replicaAddressAllowed(ip, node, p.Address) {
			e := forbidden("%s may not report replica %s at %s: its replicas serve in its pod subnet %s", p.Name(), r.Metadata.Name, r.Status.IP, node.Spec.PodSubnet)
			e.Field = "status.ip"
			return nil, e
		}
	}
	for try := 0; ; try++ {
		stored, err := store.Get[api.Replica](ctx, s.cfg.Store, api.KeyOf(r))
		if err != nil {
			return nil, err
		}
		if stored.Spec.NodeName != p.Node {
			bound := "no node"
			if stored.Spec.NodeName != "" {
				bound = "node " + stored.Spec.NodeName
			}
			return nil, forbidden("%s may not write the status of replica %s, bound to %s", p.Name(), r.Metadata.Name, bound)
		}
		next := *r
		pinned := next.Metadata.ResourceVersion == ""
		if pinned {
			next.Metadata.ResourceVersion = stored.Metadata.ResourceVersion
		}
		out, err := store.UpdateReplicaStatus(ctx, s.cfg.Store, &next)
		if pinned && errors.Is(err, api.ErrConflict) && try < maxStatusRetries {
			continue // changed since the check: check again
		}
		return out, err
	}
}

// nodeReadsRevision lets a node read a revision only when a replica of it
// is bound to the node (it runs it), and list none.
func (s *Server) nodeReadsRevision(ctx context.Context, key api.Key) error {
	p, isNode := asNode(ctx)
	if !isNode {
		return nil
	}
	if key.Name == "" {
		return forbidden("%s may not list revisions: it reads those of its replicas, one by one", p.Name())
	}
	fn, _, ok := api.ParseRevisionName(key.Name)
	if !ok {
		return api.NotFound(api.KindRevision, key.Name)
	}
	reps, _, err := store.List[api.Replica](ctx, s.cfg.Store, store.Scope{Namespace: key.Namespace, Function: fn})
	if err != nil {
		return err
	}
	for _, r := range reps {
		if r.Spec.Revision == key.Name && r.Spec.NodeName == p.Node {
			return nil
		}
	}
	return forbidden("%s may not read revision %s: no replica of it is bound to the node", p.Name(), key.Name)
}

// nodeReadsPullSecrets lets a node read the pull secrets of a namespace
// only when a replica of that namespace is bound to it (it may have to
// pull that replica's image), as Kubernetes' node authorizer lets a kubelet
// read the secrets of its pods only.
func (s *Server) nodeReadsPullSecrets(ctx context.Context, key api.Key) error {
	p, isNode := asNode(ctx)
	if !isNode {
		return nil
	}
	if key.Namespace == "" {
		return forbidden("%s may not read pull secrets of every namespace: it reads those of a namespace it runs replicas of", p.Name())
	}
	reps, _, err := store.List[api.Replica](ctx, s.cfg.Store, store.Scope{Namespace: key.Namespace})
	if err != nil {
		return err
	}
	for _, r := range reps {
		if r.Spec.NodeName == p.Node {
			return nil
		}
	}
	return forbidden("%s may not read the pull secrets of namespace %s: no replica of it is bound to the node", p.Name(), key.Namespace)
}
