package containers

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// removeCgroupParent removes the cgroup directory that holds the
// containers of a containerd namespace (containerd names each container's
// cgroup /NAMESPACE/ID, and runc removes only the ID part), in each
// hierarchy, when it is empty. A directory that still holds containers
// (replicas kept running across an agent restart) stays: rmdir refuses a
// cgroup with children, and nothing here is removed recursively.
func removeCgroupParent(namespace string) error {
	if namespace == "" || namespace == "." || filepath.Base(namespace) != namespace {
		return nil
	}
	dirs := []string{filepath.Join(cgroupRoot, namespace)} // cgroup v2
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err != nil {
		// cgroup v1: one hierarchy per controller (and named ones).
		ents, err := os.ReadDir(cgroupRoot)
		if err != nil {
			return nil
		}
		dirs = dirs[:0]
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(cgroupRoot, e.Name(), namespace))
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		err := syscall.Rmdir(d)
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.ENOTEMPTY) {
			continue
		}
		errs = append(errs, &fs.PathError{Op: "remove cgroup", Path: d, Err: err})
	}
	return errors.Join(errs...)
}
