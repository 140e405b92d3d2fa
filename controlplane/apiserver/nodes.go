package apiserver

import (
	"context"
	"net/http"
	"net/url"

	"github.com/surgeplatform/surge/api"
)

// createNode registers a node with a subnet of the pod CIDR.
func (s *Server) createNode(ctx context.Context, n *api.Node) (*api.Node, int, error) {
	out, err := s.cfg.Store.CreateNode(ctx, n, s.cfg.PodCIDR, s.cfg.NodeSubnetBits)
	return out, http.StatusCreated, err
}

// replicaFilter serves ?node=NAME (a node agent's view) and ?phase=.
func replicaFilter(q url.Values) (func(*api.Replica) bool, error) {
	node, hasNode := q["node"]
	phase := q.Get("phase")
	if hasNode && len(node) != 1 {
		return nil, fieldError("node", "give one node name")
	}
	return func(r *api.Replica) bool {
		if hasNode && r.Spec.NodeName != node[0] {
			return false
		}
		return phase == "" || string(r.Status.Phase) == phase
	}, nil
}
