package nodeagent

import (
	"slices"
	"strings"
	"sync"

	"github.com/surgeplatform/surge/api"
)

// imageSet is what the agent tells the scheduler of the images it has:
// the digests of the pinned images it pulled, the most recent first, at
// most api.MaxNodeImages (an image the runtime dropped since stays listed
// until newer ones push it out; the cost of that error is one pull). It is
// safe for concurrent use: supervisors add, the heartbeat reads.
type imageSet struct {
	mu      sync.Mutex
	digests []string
	// dirty is set when digests changed since the last take.
	dirty bool
}

// add records the image of a replica that started: the digest of a
// pinned reference ("name@sha256:…"); an unpinned one is not recorded.
func (s *imageSet) add(ref string) {
	_, d, ok := strings.Cut(ref, "@")
	if !ok || d == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.digests) > 0 && s.digests[0] == d {
		return
	}
	s.digests = slices.DeleteFunc(s.digests, func(x string) bool { return x == d })
	s.digests = slices.Insert(s.digests, 0, d)
	if len(s.digests) > api.MaxNodeImages {
		s.digests = s.digests[:api.MaxNodeImages]
	}
	s.dirty = true
}

// take returns the digests, and whether they changed since the last take.
func (s *imageSet) take() (digests []string, changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, s.dirty = s.dirty, false
	return slices.Clone(s.digests), changed
}

// list returns the digests, leaving whether they changed as it is.
func (s *imageSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.digests)
}

// untold marks the digests changed again, after a take whose status
// write failed.
func (s *imageSet) untold() {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
}
