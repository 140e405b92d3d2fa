package containers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Usage is what a replica's container has used, read from its cgroup.
type Usage struct {
	// CPUSeconds is the CPU time its processes used since it started.
	CPUSeconds float64
	// MemoryBytes is the memory it uses now, page cache included (what its
	// limit counts).
	MemoryBytes int64
}

// Usage reads the cgroup of replica id: containerd names it
// /NAMESPACE/ID in each hierarchy. It reads files only, without a call
// to containerd, so that a scrape costs a few reads per replica.
func (r *Runtime) Usage(id string) (Usage, error) {
	return readUsage(cgroupRoot, r.cfg.Namespace, id)
}

// readUsage reads a container's usage under root, from cgroup v2 (one
// hierarchy: cpu.stat's usage_usec, memory.current) or else v1 (cpuacct's
// usage in nanoseconds, memory's usage_in_bytes).
func readUsage(root, namespace, id string) (Usage, error) {
	if filepath.Base(id) != id || filepath.Base(namespace) != namespace {
		return Usage{}, fmt.Errorf("cgroup usage of %q: not a container id", id)
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		dir := filepath.Join(root, namespace, id)
		stat, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return Usage{}, fmt.Errorf("cgroup usage of %s: %w", id, err)
		}
		var u Usage
		for line := range strings.Lines(string(stat)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "usage_usec "); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return Usage{}, fmt.Errorf("cgroup usage of %s: cpu.stat: %w", id, err)
				}
				u.CPUSeconds = float64(us) / 1e6
			}
		}
		u.MemoryBytes, err = readInt(filepath.Join(dir, "memory.current"))
		return u, err
	}
	ns, errCPU := readInt(filepath.Join(root, "cpuacct", namespace, id, "cpuacct.usage"))
	mem, errMem := readInt(filepath.Join(root, "memory", namespace, id, "memory.usage_in_bytes"))
	if err := errors.Join(errCPU, errMem); err != nil {
		return Usage{}, fmt.Errorf("cgroup usage of %s: %w", id, err)
	}
	return Usage{CPUSeconds: float64(ns) / 1e9, MemoryBytes: mem}, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
