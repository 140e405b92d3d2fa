package scheduler

import (
	"errors"
	"strings"
	"testing"

	"github.com/surgeplatform/surge/api"
)

func node(name string, cpu, mem int64) Node {
	return Node{Name: name, Schedulable: true, MilliCPU: cpu, MemoryBytes: mem, FunctionCount: map[api.Key]int{}}
}

func TestPick(t *testing.T) {
	req := Request{Function: api.Key{Namespace: "default", Name: "hello"}, MilliCPU: 100, MemoryBytes: 128 << 20}
	busy := node("a", 2000, 4<<30)
	busy.FunctionCount[api.Key{Namespace: "default", Name: "hello"}] = 2
	cordoned := node("c", 8000, 16<<30)
	cordoned.Schedulable = false
	full := node("f", 2000, 4<<30)
	full.UsedMilliCPU = 1950
	loaded := node("l", 2000, 4<<30)
	loaded.UsedMilliCPU = 1000
	for _, tc := range []struct {
		name    string
		nodes   []Node
		want    string
		wantErr string
	}{
		{"only one", []Node{node("a", 2000, 4<<30)}, "a", ""},
		{"spread wins over free space", []Node{busy, node("b", 1000, 1<<30)}, "b", ""},
		{"cordoned is skipped", []Node{cordoned, node("b", 1000, 1<<30)}, "b", ""},
		{"full is skipped", []Node{full, node("b", 1000, 1<<30)}, "b", ""},
		{"least loaded", []Node{loaded, node("m", 2000, 4<<30)}, "m", ""},
		{"name breaks ties", []Node{node("z", 2000, 4<<30), node("y", 2000, 4<<30)}, "y", ""},
		{"nothing fits", []Node{full, cordoned}, "", "2 nodes: 1 not enough cpu, 1 not schedulable"},
		{"no nodes", nil, "", "no nodes have joined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pick(tc.nodes, req)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrNoNode with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Pick = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
