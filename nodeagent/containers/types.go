// Package containers runs Surge replicas as hardened containerd containers,
// each in its own network namespace, and finds them again after the agent
// restarts.
package containers

import "time"

// Namespace is the containerd namespace every Surge object lives in.
const Namespace = "surge"

// Labels put on every container, so that a restarted agent can adopt its
// replicas and remove the ones nobody claims.
const (
	LabelReplica  = "surge.dev/replica"
	LabelFunction = "surge.dev/function"
	LabelRevision = "surge.dev/revision"
	LabelNS       = "surge.dev/namespace"
	// LabelCPU keeps the replica's millicores, for ApplyCPULimit.
	LabelCPU = "surge.dev/cpu-millis"
	// LabelIP and LabelPort say where the replica serves (Container.IP and
	// Port), so that List needs nothing but containerd.
	LabelIP   = "surge.dev/ip"
	LabelPort = "surge.dev/port"
)

// Spec is what one replica runs: a revision's template resolved for one
// node. IDs are replica names, unique on a node.
type Spec struct {
	// ID is the replica's name; it names the container and its netns.
	ID        string
	Namespace string
	Function  string
	Revision  string
	// Image is a reference the node can pull, with its registry's auth.
	Image   string
	Command []string
	Args    []string
	// Env is KEY=VALUE, after PORT.
	Env  []string
	Port int32
	// MilliCPU and MemoryBytes become cgroup limits; PidsLimit bounds forks.
	MilliCPU    int64
	MemoryBytes int64
	PidsLimit   int64
}

// Container is a replica's container as the runtime sees it.
type Container struct {
	ID string
	// Labels as set at creation (see the Label constants).
	Labels map[string]string
	// IP and Port where the replica serves: its own netns address, or the
	// host's loopback and an allocated port without CNI.
	IP   string
	Port int32
	// PID of the task's init process; 0 when no task runs.
	PID uint32
	// Running is true while the task runs.
	Running bool
	// Created is when the container was created.
	Created time.Time
	// Creating is how long the Start that made it took to create the
	// container and its task and to get its network, before its process
	// started; zero for a container Start did not make.
	Creating time.Duration
}

// Exit is how a task ended.
type Exit struct {
	Code uint32
	At   time.Time
	Err  error
}
