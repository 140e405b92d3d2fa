#!/usr/bin/env bash
# Installs from Debian what is missing and does nothing when all is there.
#
#   scripts/setup.sh          what Surge needs to run (make run)
#   scripts/setup.sh bench    that, and the peers the benchmarks measure
#                             Surge against (make bench, and CI, whose tests
#                             check the peers' configs), busybox-static,
#                             of which the end-to-end tests make the non-Go
#                             example (examples/cgi), prometheus, whose
#                             promtool lints every role's metrics and whose
#                             server the end-to-end tests run against surge
#                             up and the Grafana dashboard, curl, the client
#                             the HTTPS tests check the gateway with, and
#                             h2load (nghttp2-client), B1-H2's load generator
#
# As root it installs; otherwise it prints one line saying what to install
# and exits non-zero.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables)
case "${1:-}" in
"") ;;
bench) packages+=(nginx haproxy wrk busybox-static prometheus curl nghttp2-client) ;;
*)
  echo "usage: $0 [bench]" >&2
  exit 2
  ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "surge: missing packages: run 'sudo apt-get install -y ${missing[*]}' and try again" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
