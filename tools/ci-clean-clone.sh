#!/usr/bin/env bash
# Run .ci/run exactly as CI does: in a fresh clone of the committed HEAD, with CI=true.
# Uncommitted changes are not part of the check (commit first).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
dir=$(mktemp -d /tmp/xenpt-ci.XXXXXX)
trap 'rm -rf "$dir"' EXIT
git clone -q "$top" "$dir/xenpt"
# CI lays a copy of shared/ (pci-corpus, references) beside the clone; so do we.
if [ -d "$top/../shared" ]; then
    ln -s "$(cd "$top/../shared" && pwd)" "$dir/shared"
fi
cd "$dir/xenpt"
start=$(date +%s)
CI=true bash .ci/run
echo "ci-clean-clone: passed in $(( $(date +%s) - start )) s"
