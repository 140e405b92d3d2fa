#!/usr/bin/env bash
# Builds benchmarks/cmd/gwbench as it was at a git revision, for `make bench
# BEFORE=REV`: the gateway benchmarks then measure that build beside this
# one, in the same run.
#
#   scripts/gwbench-at.sh REV OUT
set -euo pipefail
rev=${1:?usage: $0 REV OUT} out=${2:?usage: $0 REV OUT}
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git worktree add --detach --quiet "$tree" "$rev"
(cd "$tree" && go build -o "$out" ./benchmarks/cmd/gwbench)
