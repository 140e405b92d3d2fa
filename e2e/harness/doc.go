// Package harness runs a real Surge cluster on one Linux machine, for the
// multi-node fault tests: each host is a network namespace joined by a veth
// to one bridge, and every role (servers, agents each with its own
// containerd, gateways) is its own surge process in its host's namespace.
// Faults are real too: a host's link cut, a partition between hosts,
// packets dropped at random, a process's CPU throttled, SIGKILL.
//
// The test process reaches the hosts through the bridge, whose address is
// the hosts' gateway; the bounded load generator (Load) sends traffic only
// to the gateways' addresses in those namespaces. Everything the harness
// makes is named with one random prefix and removed by the test's cleanup,
// which then checks that nothing of it is left (Leftovers). E2E_KEEP_LOGS=DIR
// keeps the processes' logs of a failed test in DIR.
//
// Processes enter their namespace with nsenter --net, not ip netns exec,
// which remounts /sys: runc then finds no cgroup mount.
package harness
