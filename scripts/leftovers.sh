#!/usr/bin/env bash
# What tests leave on the machine. `make test` takes a snapshot before the
# tests and checks after them that nothing was added: no network namespace,
# link, namespace mount, containerd shim, surge process, route, iptables
# rule or cgroup. (A user's own Surge running beside the tests is in both
# snapshots, so it is not counted.)
#
#   scripts/leftovers.sh snapshot > FILE
#   scripts/leftovers.sh check FILE     exit 1, listing what is new, if any
set -euo pipefail

state() {
  ip netns list 2>/dev/null | awk '{print "netns " $1}'
  ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
  awk '$9 == "nsfs" {print "nsfs-mount " $5}' /proc/self/mountinfo
  ps -eo pid=,args= | awk '/[c]ontainerd-shim|[s]urge (up|server|agent|gateway)( |$)/ {print "process " $0}'
  ip -4 route show 2>/dev/null | sed 's/^/route /'
  if command -v iptables-save >/dev/null; then
    iptables-save 2>/dev/null | grep -E '^-A|^:' | sed -E 's/\[[0-9]+:[0-9]+\]//; s/^/iptables /'
  fi
  find /sys/fs/cgroup -maxdepth 2 -type d \( -name 'surge*' -o -name 'cri-containerd*' \) 2>/dev/null | sed 's/^/cgroup /'
}

case "${1:-}" in
snapshot) state | sort -u ;;
check)
  [[ -f "${2:-}" ]] || { echo "usage: $0 check SNAPSHOT" >&2; exit 2; }
  new=$(comm -13 "$2" <(state | sort -u))
  if [[ -n "$new" ]]; then
    echo "tests left these on the machine:" >&2
    echo "$new" | sed 's/^/  /' >&2
    exit 1
  fi
  echo "leftovers: none"
  ;;
*) echo "usage: $0 snapshot | check SNAPSHOT" >&2; exit 2 ;;
esac
