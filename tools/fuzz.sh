#!/usr/bin/env bash
# Bounded fuzzing of the config-space policy (fuzz/README.md): installs cargo-fuzz if it
# is missing, then runs the config_space target for SECONDS (default 300) from the
# committed seeds, on stable Rust (-s none). Exit 0: no invariant broken; otherwise the
# failing input is in fuzz/artifacts/config_space/ and libFuzzer's report above says why.
#
#   tools/fuzz.sh [SECONDS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-300}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cd "$top/fuzz"
# Work on a copy of the seeds so new inputs do not pile up in the checkout.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp corpus/config_space/seed-* "$work/corpus/"
echo "fuzz: config_space for ${secs} s from $(ls "$work/corpus" | wc -l) seeds"
set +e
cargo fuzz run config_space -s none "$work/corpus" -- -max_total_time="$secs" -print_final_stats=1 > "$work/log" 2>&1
status=$?
set -e
grep -aE "^(#[0-9]+.*DONE|stat::)|panicked|invariant|SUMMARY|artifact|^error" "$work/log" || tail -20 "$work/log"
echo "fuzz: $( [ "$status" = 0 ] && echo "PASS: no invariant broken in ${secs} s" || echo "FAIL (exit $status)")"
exit "$status"
