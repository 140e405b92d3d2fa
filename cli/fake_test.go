package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// fakeToken is the only token the fake API accepts.
const fakeToken = "test-token"

// fakeAPI is an in-memory API server for the routes the verbs call. It
// keeps the objects of the namespace "default" (others answer 404), checks
// the bearer token, and mirrors the real server's deploy semantics: a PUT
// of a changed spec makes revision N and its Scale; a new function's
// Traffic goes to it at once, an existing one's when the revision is
// Ready, which here is at once too unless the revision is in stuck; an
// unchanged spec makes nothing. Its fields are guarded by mu: change them
// with edit.
type fakeAPI struct {
	URL string

	mu sync.Mutex
	// now stamps created objects; tests set it before seeding.
	now       time.Time
	rv        int64
	functions map[string]*api.Function
	traffic   map[string]*api.Traffic
	revisions map[string]*api.Revision
	scales    map[string]*api.Scale
	replicas  map[string]*api.Replica
	nodes     map[string]*api.Node
	secrets   map[string]*api.PullSecret
	rollouts  map[string]*api.Rollout
	// canary scripts the rollout controller: each read of a function's
	// canary in progress applies the next status (traffic with it); with
	// none scripted, a read takes the next step.
	canary     map[string][]api.RolloutStatus
	canarySeen map[string]bool
	// waking counts the reads of a revision's scale until its replica,
	// asked for by a rollback from zero, is Ready.
	waking map[string]int
	// tokens are what GET /v1/tokens lists, in order; POST adds one with
	// the next ID of newTokenIDs.
	tokens      []api.Token
	newTokenIDs []string
	// stats is what GET /v1/stats answers; nil answers 404, as a server
	// without it does.
	stats []api.RevisionRate
	// logs are the replicas' logs, served as a node agent would at the
	// fake's own URL (nodes' agentURL is the fake's).
	logs map[string]string
	// gatewayURL, when set, makes the functions' URLs: http://NAME.gatewayURL.
	gatewayURL string
	// unscheduled names revisions whose replica no node takes, with the
	// scheduler's message.
	unscheduled map[string]string
	// slow names revisions that get Ready only after this many reads of
	// their function, their replica Starting until then.
	slow map[string]int
	// stuck names revisions that never get a Ready replica, with what
	// their replica reports instead (a pull error, say).
	stuck map[string]string
	// fail answers a route ("GET /v1/namespaces/default/functions/hello")
	// with an error instead.
	fail map[string]*api.Error
	// failOnce is fail for the next request of a route only.
	failOnce map[string]*api.Error
	// before, when set, runs before each request is served, under mu
	// (the control plane acting between a verb's polls).
	before   func(r *http.Request)
	requests []fakeRequest
}

// fakeRequest is one request the fake served.
type fakeRequest struct {
	Method, Path string // Path includes the query
	Body         []byte
}

// newFakeAPI starts a fake API server that stops with the test.
func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		now:        time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		functions:  map[string]*api.Function{},
		traffic:    map[string]*api.Traffic{},
		revisions:  map[string]*api.Revision{},
		scales:     map[string]*api.Scale{},
		replicas:   map[string]*api.Replica{},
		fail:       map[string]*api.Error{},
		stuck:      map[string]string{},
		failOnce:   map[string]*api.Error{},
		nodes:      map[string]*api.Node{},
		secrets:    map[string]*api.PullSecret{},
		logs:       map[string]string{},
		rollouts:   map[string]*api.Rollout{},
		canary:     map[string][]api.RolloutStatus{},
		canarySeen: map[string]bool{},
		waking:     map[string]int{},

		unscheduled: map[string]string{},
		slow:        map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, map[string]string{"version": "v9.9.9-fake", "api": api.Version})
	})
	mux.HandleFunc("GET /v1/functions", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.withURLs(f.functions), ""))
	})
	mux.HandleFunc("GET /v1/namespaces/default/functions", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.withURLs(f.functions), ""))
	})
	mux.HandleFunc("GET /v1/namespaces/default/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.progress(r.PathValue("name"))
		getOne(w, f.withURLs(f.functions), api.KindFunction, r.PathValue("name"))
	})
	mux.HandleFunc("PUT /v1/namespaces/default/functions/{name}", f.putFunction)
	mux.HandleFunc("DELETE /v1/namespaces/default/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := f.functions[name]; !ok {
			writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindFunction, name))
			return
		}
		delete(f.functions, name)
		writeFakeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "name": name})
	})
	mux.HandleFunc("GET /v1/namespaces/default/traffic/{name}", func(w http.ResponseWriter, r *http.Request) {
		getOne(w, f.traffic, api.KindTraffic, r.PathValue("name"))
	})
	mux.HandleFunc("PUT /v1/namespaces/default/traffic/{name}", f.putTraffic)
	mux.HandleFunc("GET /v1/namespaces/default/rollouts/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.stepCanary(r.PathValue("name"))
		getOne(w, f.rollouts, api.KindRollout, r.PathValue("name"))
	})
	mux.HandleFunc("POST /v1/namespaces/default/rollouts/{name}/rollback", f.rollback)
	mux.HandleFunc("DELETE /v1/namespaces/default/revisions/{name}", f.deleteRevision)
	mux.HandleFunc("GET /v1/namespaces/default/scales/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if sc := f.scales[name]; sc != nil && f.waking[name] > 0 {
			if f.waking[name]--; f.waking[name] == 0 {
				sc.Status.ReadyReplicas = sc.Spec.Replicas
			}
		}
		getOne(w, f.scales, api.KindScale, name)
	})
	mux.HandleFunc("GET /v1/namespaces/default/revisions", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.revisions, r.URL.Query().Get("function")))
	})
	mux.HandleFunc("GET /v1/scales", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.scales, ""))
	})
	mux.HandleFunc("GET /v1/namespaces/default/scales", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.scales, r.URL.Query().Get("function")))
	})
	mux.HandleFunc("GET /v1/replicas", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.replicas, ""))
	})
	mux.HandleFunc("GET /v1/namespaces/default/replicas", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.replicas, r.URL.Query().Get("function")))
	})

	mux.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, map[string]string{"id": "t0k3n1d", "role": "admin"})
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.nodes, ""))
	})
	mux.HandleFunc("GET /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		getOne(w, f.nodes, api.KindNode, r.PathValue("name"))
	})
	mux.HandleFunc("PUT /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		cur, ok := f.nodes[name]
		if !ok {
			writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindNode, name))
			return
		}
		var n api.Node
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a node: %v", err))
			return
		}
		if rv := n.Metadata.ResourceVersion; rv != "" && rv != cur.Metadata.ResourceVersion {
			writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict, "node %q was changed since you read it", name))
			return
		}
		n.Metadata.ResourceVersion = f.nextRV()
		f.nodes[name] = &n
		writeFakeJSON(w, http.StatusOK, &n)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		if f.stats == nil {
			writeFakeJSON(w, http.StatusNotFound, api.NewError(http.StatusNotFound, api.ReasonNotFound, "no route for GET /v1/stats"))
			return
		}
		writeFakeJSON(w, http.StatusOK, api.List[api.RevisionRate]{Items: f.stats})
	})
	mux.HandleFunc("GET /v1/namespaces/default/pullsecrets", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, listOf(f.secrets, ""))
	})
	mux.HandleFunc("GET /v1/namespaces/default/pullsecrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		getOne(w, f.secrets, api.KindPullSecret, r.PathValue("name"))
	})
	putSecret := func(w http.ResponseWriter, r *http.Request) {
		var ps api.PullSecret
		if err := json.NewDecoder(r.Body).Decode(&ps); err != nil {
			writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a pull secret: %v", err))
			return
		}
		if err := api.ValidatePullSecret(&ps); err != nil {
			var fe api.FieldErrors
			errors.As(err, &fe)
			writeFakeJSON(w, http.StatusUnprocessableEntity, api.Invalid(api.KindPullSecret, ps.Metadata.Name, fe))
			return
		}
		ps.Metadata = f.meta(api.KindPullSecret, ps.Metadata.Name, nil)
		f.secrets[ps.Metadata.Name] = &ps
		writeFakeJSON(w, http.StatusOK, &ps)
	}
	mux.HandleFunc("POST /v1/namespaces/default/pullsecrets", putSecret)
	mux.HandleFunc("PUT /v1/namespaces/default/pullsecrets/{name}", putSecret)
	mux.HandleFunc("DELETE /v1/namespaces/default/pullsecrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := f.secrets[name]; !ok {
			writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindPullSecret, name))
			return
		}
		delete(f.secrets, name)
		writeFakeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "name": name})
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeFakeJSON(w, http.StatusOK, api.List[api.Token]{Items: f.tokens})
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.TokenRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a token request: %v", err))
			return
		}
		if len(f.newTokenIDs) == 0 {
			writeFakeJSON(w, http.StatusInternalServerError, api.NewError(http.StatusInternalServerError, api.ReasonInternal, "the fake has no more token IDs"))
			return
		}
		tok := api.Token{ID: f.newTokenIDs[0], Role: req.Role, Description: req.Description, Created: f.now}
		f.newTokenIDs = f.newTokenIDs[1:]
		f.tokens = append(f.tokens, tok)
		writeFakeJSON(w, http.StatusCreated, api.NewToken{Token: tok, Secret: tok.ID + ".fake-secret-of-" + tok.ID})
	})
	mux.HandleFunc("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		admins := 0
		for _, t := range f.tokens {
			if t.Role == "admin" {
				admins++
			}
		}
		for i, t := range f.tokens {
			if t.ID != id {
				continue
			}
			if t.Role == "admin" && admins == 1 {
				writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict,
					"token %s is the last admin token: create another admin token first (surge token create --role admin)", id))
				return
			}
			f.tokens = append(f.tokens[:i], f.tokens[i+1:]...)
			writeFakeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "id": id})
			return
		}
		writeFakeJSON(w, http.StatusNotFound, api.NotFound("token", id))
	})
	mux.HandleFunc("GET /v1/namespaces/default/replicas/{name}/log", func(w http.ResponseWriter, r *http.Request) {
		text, ok := f.logs[r.PathValue("name")]
		if !ok {
			writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindReplica, r.PathValue("name")))
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, text)
	})

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("read body: %v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.requests = append(f.requests, fakeRequest{Method: r.Method, Path: r.URL.RequestURI(), Body: body})
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			writeFakeJSON(w, http.StatusUnauthorized, api.NewError(http.StatusUnauthorized, api.ReasonUnauthorized, "invalid or revoked token"))
			return
		}
		if f.before != nil {
			f.before(r)
		}
		if e := f.fail[r.Method+" "+r.URL.Path]; e != nil {
			writeFakeJSON(w, e.Code, e)
			return
		}
		if e := f.failOnce[r.Method+" "+r.URL.Path]; e != nil {
			delete(f.failOnce, r.Method+" "+r.URL.Path)
			writeFakeJSON(w, e.Code, e)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// progress moves a slow revision of fn on by one read, and makes it Ready
// (its traffic, all of it) at the last. f.mu is held.
func (f *fakeAPI) progress(fn string) {
	cur := f.functions[fn]
	if cur == nil {
		return
	}
	rev := cur.Status.LatestRevision
	n, ok := f.slow[rev]
	if !ok {
		return
	}
	if n > 1 {
		f.slow[rev] = n - 1
		return
	}
	delete(f.slow, rev)
	delete(f.replicas, rev+"-stuck")
	cur.Status.LatestReadyRevision = rev
	f.traffic[fn].Spec.Targets = []api.TrafficTarget{{Revision: rev, Percent: 100}}
}

// withURLs returns copies of fns with their URLs, when the fake has a
// gateway URL. f.mu is held.
func (f *fakeAPI) withURLs(fns map[string]*api.Function) map[string]*api.Function {
	if f.gatewayURL == "" {
		return fns
	}
	out := make(map[string]*api.Function, len(fns))
	for k, fn := range fns {
		c := *fn
		c.Status.URL = "http://" + fn.Metadata.Name + "." + f.gatewayURL
		out[k] = &c
	}
	return out
}

// addNode adds a node with allocatable cpu and memory, whose agent (for
// logs) is the fake itself.
func (f *fakeAPI) addNode(name, cpu, memory string) {
	f.edit(func() {
		f.nodes[name] = &api.Node{Kind: api.KindNode, Metadata: api.ObjectMeta{Name: name, CreationTimestamp: f.now},
			Status: api.NodeStatus{State: api.NodeAlive, Allocatable: api.NodeResources{CPU: cpu, Memory: memory}, AgentURL: f.URL}}
	})
}

// newClient is a clientFunc for the fake.
func (f *fakeAPI) newClient() (*client.Client, error) {
	return client.New(&client.Config{Server: f.URL, Token: fakeToken})
}

// puts returns the functions PUT so far, decoded.
func (f *fakeAPI) puts(t *testing.T) []api.Function {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Function
	for _, r := range f.requests {
		if r.Method != http.MethodPut {
			continue
		}
		var fn api.Function
		if err := json.Unmarshal(r.Body, &fn); err != nil {
			t.Fatalf("PUT %s: body %s: %v", r.Path, r.Body, err)
		}
		out = append(out, fn)
	}
	return out
}

// edit changes the fake's objects under its lock; tests seed with it.
func (f *fakeAPI) edit(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
}

// paths returns the paths, with queries, of the requests made with method.
func (f *fakeAPI) paths(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		if r.Method == method {
			out = append(out, r.Path)
		}
	}
	return out
}

// deploy stores fn as a PUT would, stamped at f.now; tests seed with it.
func (f *fakeAPI) deploy(t *testing.T, fn api.Function) *api.Function {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	out, _, err := f.put(&fn)
	if err != nil {
		t.Fatalf("seed function %s: %v", fn.Metadata.Name, err)
	}
	return out
}

func (f *fakeAPI) putFunction(w http.ResponseWriter, r *http.Request) {
	var fn api.Function
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fn); err != nil {
		writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a function: %v", err))
		return
	}
	if fn.Metadata.Name != r.PathValue("name") {
		writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("metadata.name does not match the path"))
		return
	}
	out, code, err := f.put(&fn)
	if err != nil {
		var ae *api.Error
		errors.As(err, &ae)
		writeFakeJSON(w, ae.Code, ae)
		return
	}
	writeFakeJSON(w, code, f.withURLs(map[string]*api.Function{"": out})[""])
}

// put is store.PutFunction in CreateOrReplace mode, in memory. f.mu is held.
func (f *fakeAPI) put(fn *api.Function) (*api.Function, int, error) {
	m := &fn.Metadata
	if m.Namespace == "" {
		m.Namespace = api.DefaultNamespace
	}
	api.SetDefaults(&fn.Spec)
	if err := api.ValidateFunction(fn); err != nil {
		var fe api.FieldErrors
		errors.As(err, &fe)
		return nil, 0, api.Invalid(api.KindFunction, m.Name, fe)
	}
	cur := f.functions[m.Name]
	switch {
	case cur == nil && m.ResourceVersion != "":
		return nil, 0, api.NotFound(api.KindFunction, m.Name)
	case cur != nil && m.ResourceVersion != "" && m.ResourceVersion != cur.Metadata.ResourceVersion:
		return nil, 0, api.NewError(http.StatusConflict, api.ReasonConflict, "function %q was changed since you read it: read it again and retry", m.Name)
	case cur != nil && reflect.DeepEqual(cur.Spec, fn.Spec):
		return cur, http.StatusOK, nil
	case cur != nil && reflect.DeepEqual(api.RevisionTemplate(&cur.Spec), api.RevisionTemplate(&fn.Spec)):
		// How revisions roll out or are kept, or how clients reach the
		// function: no revision.
		next := *cur
		next.Spec = fn.Spec
		next.Metadata.ResourceVersion = f.nextRV()
		f.functions[m.Name] = &next
		return &next, http.StatusOK, nil
	}
	next := *fn
	next.Kind = api.KindFunction
	code := http.StatusCreated
	if cur != nil {
		next.Metadata.UID, next.Metadata.CreationTimestamp = cur.Metadata.UID, cur.Metadata.CreationTimestamp
		next.Metadata.Generation, next.Status = cur.Metadata.Generation, cur.Status
		code = http.StatusOK
	} else {
		next.Metadata.UID = "function-" + m.Name
		next.Metadata.CreationTimestamp = f.now
	}
	next.Metadata.Generation++
	next.Status.ImageDigest = "" // the fake resolves no image
	rev := api.RevisionName(m.Name, next.Metadata.Generation)
	next.Status.LatestRevision = rev
	next.Metadata.ResourceVersion = f.nextRV()
	labels := map[string]string{api.LabelFunction: m.Name}
	f.revisions[rev] = &api.Revision{
		Kind:     api.KindRevision,
		Metadata: f.meta(api.KindRevision, rev, labels),
		Spec:     api.RevisionSpec{Function: m.Name, Number: next.Metadata.Generation, Template: api.RevisionTemplate(&next.Spec)},
	}
	f.scales[rev] = &api.Scale{
		Kind:     api.KindScale,
		Metadata: f.meta(api.KindScale, rev, map[string]string{api.LabelFunction: m.Name, api.LabelRevision: rev}),
		Spec:     api.ScaleSpec{Replicas: max(next.Spec.Scaling.MinScale, 1)},
	}
	msg, stuck := f.stuck[rev]
	node := "node-a"
	if m, ok := f.unscheduled[rev]; ok {
		msg, stuck, node = m, true, ""
	}
	if _, ok := f.slow[rev]; ok {
		msg, stuck = "pulling the image", true
	}
	if stuck {
		name := rev + "-stuck"
		f.replicas[name] = &api.Replica{
			Kind:     api.KindReplica,
			Metadata: f.meta(api.KindReplica, name, map[string]string{api.LabelFunction: m.Name, api.LabelRevision: rev}),
			Spec:     api.ReplicaSpec{Function: m.Name, Revision: rev, NodeName: node},
			Status:   api.ReplicaStatus{Phase: api.ReplicaStarting, Message: msg},
		}
	} else {
		next.Status.LatestReadyRevision = rev
	}
	switch {
	case cur != nil && !stuck && next.Spec.Canary != nil && f.traffic[m.Name] != nil:
		tr := f.traffic[m.Name]
		ro := &api.Rollout{Kind: api.KindRollout, Metadata: f.meta(api.KindRollout, m.Name, labels),
			Spec:   api.RolloutSpec{Revision: rev, From: api.MainTarget(tr), Canary: next.Spec.Canary},
			Status: api.RolloutStatus{Phase: api.RolloutProgressing, Percent: next.Spec.Canary.Steps[0], Started: f.now, StepStarted: f.now}}
		f.rollouts[m.Name] = ro
		f.canarySeen[m.Name] = false
		tr.Spec.Targets = api.Split(tr, ro.Shares())
	case cur == nil || !stuck:
		f.traffic[m.Name] = &api.Traffic{
			Kind:     api.KindTraffic,
			Metadata: f.meta(api.KindTraffic, m.Name, labels),
			Spec:     api.TrafficSpec{Targets: []api.TrafficTarget{{Revision: rev, Percent: 100}}},
		}
	}
	f.functions[m.Name] = &next
	return &next, code, nil
}

// stepCanary moves fn's canary in progress on, as the rollout controller
// would between two reads. f.mu is held.
func (f *fakeAPI) stepCanary(fn string) {
	ro := f.rollouts[fn]
	if ro == nil || ro.Status.Phase != api.RolloutProgressing || ro.Spec.Canary == nil {
		return
	}
	if !f.canarySeen[fn] {
		f.canarySeen[fn] = true // its first read shows its first step
		return
	}
	if script := f.canary[fn]; len(script) > 0 {
		next := script[0]
		next.Started, next.StepStarted = ro.Status.Started, f.now
		if next.Phase.Done() {
			next.Finished = f.now
		}
		ro.Status, f.canary[fn] = next, script[1:]
	} else {
		steps := ro.Spec.Canary.Steps
		ro.Status.Step = min(ro.Status.Step+1, int32(len(steps)-1))
		ro.Status.Percent = steps[ro.Status.Step]
		ro.Status.Analysis = &api.RolloutAnalysis{
			Canary:   api.RevisionHealth{Requests: 40 * int64(ro.Status.Step), P99: api.Duration{Duration: 12 * time.Millisecond}},
			Baseline: api.RevisionHealth{Requests: 360, Errors: 1, P99: api.Duration{Duration: 11 * time.Millisecond}},
		}
		if ro.Status.Percent == 100 {
			ro.Status.Phase, ro.Status.Finished = api.RolloutSucceeded, f.now
		}
	}
	ro.Metadata.ResourceVersion = f.nextRV()
	if shares := ro.Shares(); shares != nil {
		tr := f.traffic[fn]
		tr.Spec.Targets = api.Split(tr, shares)
	}
}

func (f *fakeAPI) putTraffic(w http.ResponseWriter, r *http.Request) {
	var t api.Traffic
	if err := json.NewDecoder(r.Body).Decode(&t); err != nil {
		writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a traffic: %v", err))
		return
	}
	name := r.PathValue("name")
	t.Metadata.Name, t.Metadata.Namespace = name, api.DefaultNamespace
	if err := api.ValidateTraffic(&t); err != nil {
		var fe api.FieldErrors
		errors.As(err, &fe)
		writeFakeJSON(w, http.StatusUnprocessableEntity, api.Invalid(api.KindTraffic, name, fe))
		return
	}
	var fe api.FieldErrors
	for i, tt := range t.Spec.Targets {
		if f.revisions[tt.Revision] == nil {
			fe = append(fe, api.FieldError{Field: fmt.Sprintf("spec.targets[%d].revision", i),
				Message: fmt.Sprintf("revision %q does not exist: `surge revisions %s` lists them", tt.Revision, name)})
		}
	}
	if len(fe) > 0 {
		writeFakeJSON(w, http.StatusUnprocessableEntity, api.Invalid(api.KindTraffic, name, fe))
		return
	}
	cur := f.traffic[name]
	if cur == nil || (t.Metadata.ResourceVersion != "" && t.Metadata.ResourceVersion != cur.Metadata.ResourceVersion) {
		writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict, "traffic %q was changed since you read it", name))
		return
	}
	cur.Spec = t.Spec
	cur.Metadata.ResourceVersion = f.nextRV()
	if ro := f.rollouts[name]; ro != nil && ro.Status.Phase == api.RolloutProgressing && !api.SameShares(cur, ro.Shares()) {
		ro.Status.Phase = api.RolloutAborted
	}
	writeFakeJSON(w, http.StatusOK, cur)
}

// rollback is store.Rollback with the API's activation, in memory.
func (f *fakeAPI) rollback(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.RollbackRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeFakeJSON(w, http.StatusBadRequest, api.BadRequest("body is not a rollback request: %v", err))
		return
	}
	tr := f.traffic[name]
	if f.functions[name] == nil || tr == nil {
		writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindFunction, name))
		return
	}
	ro, to := f.rollouts[name], req.Revision
	if to == "" {
		if ro == nil || ro.Spec.From == "" {
			writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict,
				"function %q has no rollout to undo: name the revision, surge rollback %s --to REV", name, name))
			return
		}
		to = ro.Spec.From
	}
	if f.revisions[to] == nil {
		e := api.NewError(http.StatusNotFound, api.ReasonNotFound, "revision %q of function %q does not exist: `surge revisions %s` lists them", to, name, name)
		e.Field = "revision"
		writeFakeJSON(w, e.Code, e)
		return
	}
	if api.SameShares(tr, map[string]int32{to: 100}) {
		writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict, "function %q: all of its traffic is on %s already", name, to))
		return
	}
	out := api.RollbackResponse{}
	if sc := f.scales[to]; sc != nil && sc.Spec.Replicas == 0 {
		sc.Spec.Replicas, out.Activated = 1, true
		f.waking[to] = 2
	}
	from := api.MainTarget(tr)
	next := &api.Rollout{Kind: api.KindRollout, Metadata: f.meta(api.KindRollout, name, map[string]string{api.LabelFunction: name}),
		Spec:   api.RolloutSpec{Revision: to, From: from, Rollback: true},
		Status: api.RolloutStatus{Phase: api.RolloutSucceeded, Percent: 100, Started: f.now, Finished: f.now, Reason: "rolled back from " + from + " by a user"}}
	f.rollouts[name] = next
	tr.Spec.Targets = api.Split(tr, map[string]int32{to: 100})
	tr.Metadata.ResourceVersion = f.nextRV()
	out.Rollout = *next
	writeFakeJSON(w, http.StatusOK, out)
}

// deleteRevision is store.DeleteRevision, in memory.
func (f *fakeAPI) deleteRevision(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rev := f.revisions[name]
	if rev == nil {
		writeFakeJSON(w, http.StatusNotFound, api.NotFound(api.KindRevision, name))
		return
	}
	fn := rev.Spec.Function
	if why := api.KeepsRevision(f.functions[fn], f.traffic[fn], f.rollouts[fn], name); why != "" {
		writeFakeJSON(w, http.StatusConflict, api.NewError(http.StatusConflict, api.ReasonConflict, "revision %q is kept: %s", name, why))
		return
	}
	delete(f.revisions, name)
	delete(f.scales, name)
	writeFakeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "name": name})
}

func (f *fakeAPI) meta(kind, name string, labels map[string]string) api.ObjectMeta {
	return api.ObjectMeta{
		Name: name, Namespace: api.DefaultNamespace, UID: strings.ToLower(kind) + "-" + name,
		ResourceVersion: f.nextRV(), CreationTimestamp: f.now, Labels: labels,
	}
}

func (f *fakeAPI) nextRV() string {
	f.rv++
	return strconv.FormatInt(f.rv, 10)
}

// metaOf reaches the metadata of any stored kind.
func metaOf[T any](obj *T) *api.ObjectMeta {
	return any(obj).(api.Object).GetMetadata()
}

// listOf lists objects by name, as etcd's key order does, keeping those of
// one function when function is set.
func listOf[T any](objs map[string]*T, function string) api.List[T] {
	l := api.List[T]{ResourceVersion: "100", Items: []T{}}
	for _, name := range slices.Sorted(maps.Keys(objs)) {
		obj := objs[name]
		if function != "" && metaOf(obj).Labels[api.LabelFunction] != function {
			continue
		}
		l.Items = append(l.Items, *obj)
	}
	return l
}

func getOne[T any](w http.ResponseWriter, objs map[string]*T, kind, name string) {
	obj, ok := objs[name]
	if !ok {
		writeFakeJSON(w, http.StatusNotFound, api.NotFound(kind, name))
		return
	}
	writeFakeJSON(w, http.StatusOK, obj)
}

func writeFakeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
