package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// A node's heartbeat lives under LeasePrefix, apart from its Node, as
// Kubernetes' node leases do: an agent beats every second, and a beat that
// rewrote the Node would wake every watcher of nodes and every controller
// pass. The node controller reads the leases instead; the API fills a
// Node's status.lastSeen from its lease when it serves it.

// LeasePrefix holds one key per node: when the API last heard its agent.
const LeasePrefix = Prefix + "leases/"

// nodeLease is a lease's value.
type nodeLease struct {
	// RenewTime is the receiving server's time, never the agent's: only
	// the servers' clocks decide how old a beat is.
	RenewTime time.Time `json:"renewTime"`
}

// RenewNodeLease records a heartbeat of a node's agent, stamped with the
// store's clock, and returns the node. A node the controllers declared
// dead is alive again from its first beat (its replicas were replaced
// meanwhile; its agent removes them when it sees them gone).
func (s *Store) RenewNodeLease(ctx context.Context, name string) (*api.Node, error) {
	n, err := Get[api.Node](ctx, s, api.Key{Name: name})
	if err != nil {
		return nil, err
	}
	now := s.clock.Now().UTC()
	b, err := json.Marshal(nodeLease{RenewTime: now})
	if err != nil {
		return nil, err
	}
	if _, err := s.c.Put(ctx, LeasePrefix+name, string(b)); err != nil {
		return nil, fmt.Errorf("renew lease of node %s: %w", name, err)
	}
	if n.Status.State != api.NodeAlive {
		n.Metadata.ResourceVersion = "" // the beat wins over a concurrent write
		n.Status.State, n.Status.LastSeen = api.NodeAlive, now
		if n, err = UpdateNodeStatus(ctx, s, n); err != nil {
			return nil, err
		}
	}
	n.Status.LastSeen = now
	return n, nil
}

// NodeLeases returns when each node last beat.
func (s *Store) NodeLeases(ctx context.Context) (map[string]time.Time, error) {
	resp, err := s.c.Get(ctx, LeasePrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read node leases: %w", err)
	}
	out := make(map[string]time.Time, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var l nodeLease
		if json.Unmarshal(kv.Value, &l) == nil {
			out[string(kv.Key[len(LeasePrefix):])] = l.RenewTime
		}
	}
	return out, nil
}

// deleteNodeLease removes a node's lease with the node.
func (s *Store) deleteNodeLease(ctx context.Context, name string) error {
	if _, err := s.c.Delete(ctx, LeasePrefix+name); err != nil {
		return fmt.Errorf("delete lease of node %s: %w", name, err)
	}
	return nil
}

// WithLease sets a node's status.lastSeen to its last heartbeat, as the
// server stamped it. A node without a lease keeps what its status says.
func WithLease(n *api.Node, leases map[string]time.Time) {
	if t, ok := leases[n.Metadata.Name]; ok {
		n.Status.LastSeen = t
	}
}
