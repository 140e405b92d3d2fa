package nodeagent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
	"github.com/surgeplatform/surge/controlplane/controlplanetest"
)

func TestImageSet(t *testing.T) {
	var s imageSet
	d := func(i int) string { return fmt.Sprintf("sha256:%064d", i) }
	s.add("registry.example/hello:v1") // not pinned: not recorded
	if got, changed := s.take(); len(got) != 0 || changed {
		t.Fatalf("an unpinned image: %v, changed %v", got, changed)
	}
	s.add("registry.example/hello@" + d(1))
	s.add("registry.example/world:v2@" + d(2))
	s.add("registry.example/hello@" + d(1)) // again: to the front
	got, changed := s.take()
	if diff := cmp.Diff([]string{d(1), d(2)}, got); diff != "" || !changed {
		t.Fatalf("digests (-want +got):\n%s\nchanged %v", diff, changed)
	}
	s.add("registry.example/hello@" + d(1)) // already first: no change
	if _, changed := s.take(); changed {
		t.Error("re-adding the newest image is a change")
	}
	for i := range api.MaxNodeImages + 5 {
		s.add("registry.example/x@" + d(100+i))
	}
	got, _ = s.take()
	if len(got) != api.MaxNodeImages || got[0] != d(100+api.MaxNodeImages+4) {
		t.Errorf("after many: %d digests, newest %s", len(got), got[0])
	}
}

// TestRegisterSetsLabelsAndImages: a node registers with its labels and
// images; registering again keeps the labels it first had (a node changes
// none: NodeRestriction), reports its images anew, and keeps a cordon set
// meanwhile.
func TestRegisterSetsLabelsAndImages(t *testing.T) {
	in := controlplanetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodeAPI, _ := in.NodeClient("n1", "127.0.0.1")
	admin := in.Client()
	defer closeIdleConnections(admin)

	cfg := DefaultConfig()
	cfg.NodeName, cfg.Address = "n1", "127.0.0.1"
	cfg.MilliCPU, cfg.MemoryBytes = 4000, 8<<30
	cfg.Labels = map[string]string{"disk": "ssd"}
	image := fmt.Sprintf("sha256:%064d", 7)
	if _, err := register(ctx, nodeAPI, cfg, image); err != nil {
		t.Fatal(err)
	}
	n, err := client.Get[api.Node](ctx, admin, api.Key{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(n.Metadata.Labels, cfg.Labels) || !cmp.Equal(n.Status.Images, []string{image}) {
		t.Fatalf("registered: labels %v, images %v", n.Metadata.Labels, n.Status.Images)
	}
	n.Spec.Unschedulable = true
	if err := admin.Do(ctx, "PUT", client.ObjectPath[api.Node](api.Key{Name: "n1"}), n, nil); err != nil {
		t.Fatal(err)
	}
	first := cfg.Labels
	cfg.Labels = map[string]string{"disk": "hdd", "zone": "b"}
	if _, err := register(ctx, nodeAPI, cfg); err != nil {
		t.Fatal(err)
	}
	if n, err = client.Get[api.Node](ctx, admin, api.Key{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(n.Metadata.Labels, first) || !n.Spec.Unschedulable || len(n.Status.Images) != 0 {
		t.Errorf("registered again: labels %v, cordoned %v, images %v", n.Metadata.Labels, n.Spec.Unschedulable, n.Status.Images)
	}
	if _, err := register(ctx, nodeAPI, cfg, "not-a-digest"); err == nil {
		t.Error("a status with a bad image digest was taken")
	}
}
