package controlplane

import (
	"context"
	"net/http"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/controlplane/apiserver"
	"github.com/surgeplatform/surge/controlplane/auth"
	"github.com/surgeplatform/surge/controlplane/controllers"
	"github.com/surgeplatform/surge/controlplane/registry"
	"github.com/surgeplatform/surge/controlplane/store"
)

// registryRoutes mounts the OCI registry at /v2/ behind the API's token
// check: GET (and HEAD) read, the other methods push.
func registryRoutes(reg http.Handler) []apiserver.Route {
	var rs []apiserver.Route
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		rs = append(rs, apiserver.Route{Pattern: m + " /v2/", Resource: auth.ResourceRegistry, Handler: reg})
	}
	return rs
}

// imageGCInterval is how often the registry drops images nothing names.
const imageGCInterval = time.Hour

// collectImages is the leader's task that runs registry GC every
// imageGCInterval: on this server, then, through POST /v1/cluster/gc, on
// every other running server, each on its own copy of the registry. One
// server decides when, so that the copies are collected together and
// never while another server's GC could race a copy between them.
func (s *Server) collectImages(p *parts) controllers.LeaderTask {
	return func(ctx context.Context) error {
		t := s.clock.NewTicker(imageGCInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.Chan():
			}
			res, err := collectImagesOnce(ctx, p.store, p.images)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("registry GC skipped", "err", err)
				}
				continue
			}
			s.log.Info("registry GC", "manifests", res.Manifests, "blobs", res.Blobs, "bytes", res.Bytes)
			s.collectPeersImages(ctx, p.peers)
		}
	}
}

// collectPeersImages asks every other running server for its GC round.
func (s *Server) collectPeersImages(ctx context.Context, ps *peers) {
	others, err := ps.list(ctx)
	if err != nil {
		s.log.Warn("registry GC of the other servers skipped", "err", err)
		return
	}
	for _, o := range others {
		resp, err := ps.do(ctx, http.MethodPost, o.APIURL+"/v1/cluster/gc", nil, nil)
		if err == nil {
			err = expect(resp, http.StatusOK, "registry GC")
		}
		if err != nil {
			s.log.Warn("registry GC on another server failed", "server", o.Name, "err", err)
		}
	}
}

// collectImagesOnce keeps the images every Function and Revision names
// (every revision, not only the serving ones: rollback needs them). Any
// failure to list them skips the round, since GC with a partial keep set
// would delete live images.
func collectImagesOnce(ctx context.Context, st *store.Store, reg *registry.Registry) (registry.GCResult, error) {
	fns, _, err := store.List[api.Function](ctx, st, store.Scope{})
	if err != nil {
		return registry.GCResult{}, err
	}
	revs, _, err := store.List[api.Revision](ctx, st, store.Scope{})
	if err != nil {
		return registry.GCResult{}, err
	}
	refs := make([]string, 0, len(fns)+len(revs))
	for _, f := range fns {
		refs = append(refs, f.Spec.Image)
	}
	for _, r := range revs {
		refs = append(refs, r.Spec.Template.Image)
	}
	keep, err := registry.KeepReferences(refs)
	if err != nil {
		return registry.GCResult{}, err
	}
	return reg.GC(ctx, keep)
}
