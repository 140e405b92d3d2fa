package apiserver

import (
	"context"
	"net/http"
	"net/url"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/store"
)

// heartbeatRoutes serve a node agent's heartbeat: PUT /v1/nodes/NAME/lease
// renews the node's lease (see store.RenewNodeLease), and answers the
// node as the API sees it, so that the agent learns at once when it was
// declared dead. A node renews only its own lease.
func (s *Server) heartbeatRoutes() {
	s.handle("PUT /v1/nodes/{name}/lease", api.NodeKind.Plural, auth.Write, func(w http.ResponseWriter, r *http.Request) {
		if p, ok := asNode(r.Context()); ok {
			if err := ownNode(p, r.PathValue("name"), "renew the lease"); err != nil {
				writeError(w, s.cfg.Log, err)
				return
			}
		}
		n, err := s.cfg.Store.RenewNodeLease(r.Context(), r.PathValue("name"))
		if err != nil {
			writeError(w, s.cfg.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, n)
	})
}

// showNodes sets each node's lastSeen to its last heartbeat.
func (s *Server) showNodes(ctx context.Context, nodes []api.Node) error {
	leases, err := s.cfg.Store.NodeLeases(ctx)
	if err != nil {
		return err
	}
	for i := range nodes {
		store.WithLease(&nodes[i], leases)
	}
	return nil
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
