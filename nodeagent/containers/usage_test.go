package containers

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadUsageFromEitherCgroupVersion(t *testing.T) {
	write := func(t *testing.T, path, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v2 := t.TempDir()
	write(t, filepath.Join(v2, "cgroup.controllers"), "cpu memory pids\n")
	write(t, filepath.Join(v2, "surge", "r1", "cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
	write(t, filepath.Join(v2, "surge", "r1", "memory.current"), "1048576\n")
	v1 := t.TempDir()
	write(t, filepath.Join(v1, "cpuacct", "surge", "r1", "cpuacct.usage"), "1500000000\n")
	write(t, filepath.Join(v1, "memory", "surge", "r1", "memory.usage_in_bytes"), "2097152\n")
	for name, tc := range map[string]struct {
		root string
		want Usage
	}{
		"v2": {v2, Usage{CPUSeconds: 2.5, MemoryBytes: 1 << 20}},
		"v1": {v1, Usage{CPUSeconds: 1.5, MemoryBytes: 2 << 20}},
	} {
		got, err := readUsage(tc.root, "surge", "r1")
		if err != nil || got != tc.want {
			t.Errorf("%s: readUsage = %+v, %v; want %+v", name, got, err, tc.want)
		}
		if _, err := readUsage(tc.root, "surge", "gone"); err == nil {
			t.Errorf("%s: a replica without a cgroup read as used", name)
		}
	}
	if _, err := readUsage(v2, "surge", "../surge"); err == nil {
		t.Error("an id with a path in it was read")
	}
}
