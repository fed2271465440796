#!/usr/bin/env bash
# The CI guard for the per-access hot paths (issue 10, budget 1): instructions per guest
# access counted by valgrind's callgrind, which is deterministic (the same count on a busy
# or idle machine), compared with benches/callgrind-baseline.txt. Each path runs twice,
# with 0 and with N accesses, so the set-up cancels out.
#
#   tools/callgrind-guard.sh            check: exit 1 if a path costs > 10% more than its baseline
#   tools/callgrind-guard.sh --update   measure and rewrite the baseline
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
baseline=$top/benches/callgrind-baseline.txt
tolerance=${XENPT_CALLGRIND_TOLERANCE:-10}
n=2000
command -v valgrind >/dev/null || { echo "callgrind-guard: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
(cd "$top" && cargo build --release -q --example hotpath)
bin=$top/target/release/examples/hotpath
count() { # path n -> instructions of the whole run
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 >/dev/null \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
update=0; [ "${1:-}" = --update ] && update=1
fail=0; out=()
for path in config-read config-write passthrough-read msix-rebind; do
    a=$(count $path 0); b=$(count $path $n)
    per=$(( (b - a) / n ))
    out+=("$path $per")
    if [ $update = 1 ]; then
        echo "callgrind-guard: $path: $per instructions per access"
        continue
    fi
    base=$(awk -v p=$path '$1 == p {print $2}' "$baseline")
    [ -n "$base" ] || { echo "callgrind-guard: FAIL $path: no baseline in $baseline (run with --update)"; fail=1; continue; }
    limit=$(( base * (100 + tolerance) / 100 ))
    ratio=$(awk -v a=$per -v b=$base 'BEGIN {printf "%.3f", a / b}')
    if [ $per -gt $limit ]; then
        echo "callgrind-guard: FAIL $path: $per instructions per access, baseline $base (x$ratio, limit +$tolerance%)"
        fail=1
    else
        echo "callgrind-guard: ok   $path: $per instructions per access, baseline $base (x$ratio)"
    fi
done
if [ $update = 1 ]; then
    { echo "# Instructions per guest access on the hot paths (tools/callgrind-guard.sh --update)."
      echo "# Measured $(date -u +%Y-%m-%d) with $(rustc --version | cut -d' ' -f1-2); CI fails above +$tolerance%."
      printf '%s\n' "${out[@]}"; } > "$baseline"
    echo "callgrind-guard: wrote $baseline"
fi
exit $fail
