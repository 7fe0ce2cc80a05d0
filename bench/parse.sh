#!/usr/bin/env bash
# Dockerfile parser throughput: the seed's Dockerfile and generated 10k/20k/40k-instruction
# files; prints MB/s and whether the time grows linearly.
#
#   bench/parse.sh                 timed run (thread CPU time, sizes round-robin, best of 5)
#   bench/parse.sh --quick         (or BENCH_QUICK=1) a short run on 500/1000/2000-instruction
#                                  files: checks the bench runs and prints its table
#   bench/parse.sh --instructions  also count executed CPU instructions per parse with
#                                  valgrind (deterministic, immune to a busy machine)
set -euo pipefail
cd "$(dirname "$0")/.."
count=false
args=()
[ "${BENCH_QUICK:-0}" = 1 ] && args+=(--quick)
for a in "$@"; do
  if [ "$a" = "--instructions" ]; then count=true; else args+=("$a"); fi
done
for a in "${args[@]}"; do
  [ "$a" = --quick ] && export KILN_BENCH_SIZES=${KILN_BENCH_SIZES:-500,1000,2000}
done
cargo bench -p kiln-dockerfile --bench parse -- "${args[@]}"
$count || exit 0
command -v valgrind >/dev/null || { echo "valgrind not found: skipping instruction counts" >&2; exit 0; }
bin=$(cargo bench -p kiln-dockerfile --bench parse --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
ir() { # instructions executed by the whole process
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --parse-only "$1" "$2" 2>&1 \
    | awk '/Collected/ {print $NF}'
}
echo "instructions per parse (callgrind, (3 parses - 1 parse) / 2):"
base=""
for n in 10000 20000 40000; do
  per=$(( ($(ir "$n" 3) - $(ir "$n" 1)) / 2 ))
  [ -n "$base" ] || base=$per
  awk -v n="$n" -v p="$per" -v b="$base" 'BEGIN { printf "%8d instrs: %12d instructions  %.2fx\n", n, p, p / b }'
done
