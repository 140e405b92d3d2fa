package containers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/surgeplatform/surge/nodeagent/network"
)

const (
	// cpuPeriod is the CFS period a replica's quota is a share of: the
	// kernel's default, 100ms. A shorter period throttles sooner and more
	// smoothly, at more scheduler cost.
	cpuPeriod = 100_000 // µs
	// minCPUQuota is the smallest quota runc accepts.
	minCPUQuota = 1_000 // µs
	// maxOpenFiles bounds RLIMIT_NOFILE: containerd's default of 1024 is
	// low for a server holding a connection per in-flight request. It is
	// further capped by the agent's own hard limit (see openFilesLimit).
	maxOpenFiles = 65536
	// defaultPort is where a replica listens when its Spec says nothing.
	defaultPort = 8080
)

// specInput is everything the OCI spec of a replica is made from.
type specInput struct {
	spec     Spec
	image    *imageInfo
	att      network.Attachment
	port     int32  // the port the replica listens on (PORT)
	hosts    string // file bind-mounted at /etc/hosts, or ""
	resolv   string // file bind-mounted at /etc/resolv.conf, or ""
	tmpSize  int64
	pidLimit int64
	noFile   uint64 // RLIMIT_NOFILE, soft and hard
	// boost starts the replica without its CPU quota and weight (see
	// Config.StartupCPUBoost); ApplyCPULimit sets them.
	boost bool
}

// cpuQuota is the CFS quota of millicores per cpuPeriod.
func cpuQuota(milli int64) int64 { return max(milli*cpuPeriod/1000, minCPUQuota) }

// cpuShares is the CPU weight of millicores, 1024 a core: shares weigh
// replicas against each other when the node is contended below their
// quotas, as Kubernetes does from requests.
func cpuShares(milli int64) uint64 { return uint64(max(milli*1024/1000, 2)) }

// withNativeSeccompABI narrows the seccomp profile to the node's own
// system call ABI. containerd's profile also admits the 32-bit ones (x86
// and x32 beside x86-64, arm beside arm64), and runc has libseccomp build
// the filter for every one of them at each container start: about 15ms of
// a cold start on a small node, where the native ABI's alone costs under
// 2ms. Replicas run images built or pulled for the node's architecture, so
// only a 32-bit program loses (its system calls are refused), and the
// compat entry points, a long record of kernel vulnerabilities, are out of
// reach.
func withNativeSeccompABI(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Linux == nil || s.Linux.Seccomp == nil {
		return nil
	}
	switch goruntime.GOARCH {
	case "amd64":
		s.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchX86_64}
	case "arm64":
		s.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchAARCH64}
	}
	return nil
}

// specOpts returns the OCI spec options of a replica, in the order they
// must apply: the image's process, then the hardening (capabilities before
// the seccomp profile, which allows syscalls by the capabilities held),
// then limits and namespaces.
//
// What a replica gets: containerd's default Unix spec (its own pid, ipc,
// uts and mount namespaces; the default masked and read-only /proc paths;
// no devices beyond the default ones), a read-only root filesystem with a
// size-bounded tmpfs at /tmp, no capabilities in any set,
// no_new_privs, containerd's default seccomp profile for the node's own
// system call ABI (withNativeSeccompABI), a non-root user,
// and cgroup limits on memory, CPU and pids. The only files from outside
// the image are the generated hosts and resolv.conf, read-only.
func specOpts(in specInput) []oci.SpecOpts {
	env := []string{"PORT=" + strconv.Itoa(int(in.port))}
	for _, e := range in.spec.Env {
		// The runtime owns PORT: in host mode it is an allocated port that
		// the function cannot choose.
		if !strings.HasPrefix(e, "PORT=") {
			env = append(env, e)
		}
	}
	mounts := []specs.Mount{{
		Destination: "/tmp",
		Type:        "tmpfs",
		Source:      "tmpfs",
		Options:     []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(in.tmpSize, 10)},
	}}
	for _, f := range []struct{ src, dst string }{{in.hosts, "/etc/hosts"}, {in.resolv, "/etc/resolv.conf"}} {
		if f.src != "" {
			mounts = append(mounts, specs.Mount{
				Destination: f.dst,
				Type:        "bind",
				Source:      f.src,
				Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
			})
		}
	}

	opts := []oci.SpecOpts{
		withImageProcess(in.image.config, in.spec.Command, in.spec.Args),
		oci.WithEnv(env),
		oci.WithHostname(in.spec.ID),
		oci.WithUIDGID(in.image.uid, in.image.gid),
		oci.WithRootFSReadonly(),
		oci.WithMounts(mounts),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		seccomp.WithDefaultProfile(),
		withNativeSeccompABI,
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: in.noFile, Soft: in.noFile}),
		oci.WithPidsLimit(in.pidLimit),
	}
	if in.spec.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(in.spec.MemoryBytes)))
	}
	if in.spec.MilliCPU > 0 && !in.boost {
		opts = append(opts, oci.WithCPUShares(cpuShares(in.spec.MilliCPU)), oci.WithCPUCFS(cpuQuota(in.spec.MilliCPU), cpuPeriod))
	}
	if in.att.NetNS != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: in.att.NetNS}))
	} else {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace))
	}
	return opts
}

// withImageProcess sets the process from the image config read by
// EnsureImage, without reading the image again: argv with Kubernetes'
// rules (Command replaces the entrypoint, Args replace the image's Cmd),
// the image's env and working directory.
func withImageProcess(ic ocispec.ImageConfig, command, args []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var argv []string
		switch {
		case len(command) > 0:
			argv = append(append(argv, command...), args...)
		case len(args) > 0:
			argv = append(append(argv, ic.Entrypoint...), args...)
		default:
			argv = append(append(argv, ic.Entrypoint...), ic.Cmd...)
		}
		if len(argv) == 0 {
			return errors.New("the image has no entrypoint or cmd, and the spec no command")
		}
		s.Process.Args = argv
		s.Process.Env = append([]string(nil), ic.Env...)
		if len(s.Process.Env) == 0 {
			s.Process.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		}
		s.Process.Cwd = ic.WorkingDir
		if s.Process.Cwd == "" {
			s.Process.Cwd = "/"
		}
		return nil
	}
}

// openFilesLimit is maxOpenFiles, or the agent's own hard RLIMIT_NOFILE
// when lower: raising a hard limit needs CAP_SYS_RESOURCE, which runc may
// lack (sandboxes, nested containers), and containerd is usually started
// with the same limits as the agent.
func openFilesLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max >= maxOpenFiles {
		return maxOpenFiles
	}
	return rl.Max
}

// hostsFile is a replica's /etc/hosts: localhost, and its own name on its
// own address.
func hostsFile(id, ip string) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if ip != "" && ip != "127.0.0.1" {
		fmt.Fprintf(&b, "%s\t%s\n", ip, id)
	} else {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", id)
	}
	return b.Bytes()
}

// resolvConf is the host's resolv.conf for a replica. In its own network
// namespace a loopback nameserver (systemd-resolved's 127.0.0.53) is not
// the host's, so such lines are dropped; ok is false when no nameserver
// remains, and the replica then gets no resolv.conf.
func resolvConf(host []byte, ownNetNS bool) (_ []byte, ok bool) {
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(f[1])
			if err != nil || (ownNetNS && a.IsLoopback()) {
				continue
			}
			ok = true
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes(), ok
}

// hostResolvConf reads the host's resolv.conf once per Start; it is small
// and may change (DHCP), so it is not cached.
func hostResolvConf() []byte {
	b, _ := os.ReadFile("/etc/resolv.conf")
	return b
}
