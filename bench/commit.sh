#!/usr/bin/env bash
# The commit of a ~500 MB RUN layer against `tar -c | sha256sum` over the same files, in one
# run. Prints the median of each over ROUNDS rounds and their ratio (target: within 1.1x).
#
#   bench/commit.sh            (as root; needs busybox-static, python3, bc, openssl)
#   bench/commit.sh --quick    (or BENCH_QUICK=1) ~5 MB of files, two rounds: checks the
#                              script works and prints its table, offline; times nothing
#   ROUNDS=9 SIZE_MB=500 bench/commit.sh
#   KILN_BASELINE=/path/to/older/kiln bench/commit.sh   also times that kiln in every round
#                              (before/after a change, under the same noise)
#
# kiln is timed on its real path: a `kiln build --no-cache` whose RUN copies the files (from a
# bind mount of the context) into the image, and the seconds its own `committed` line reports
# for that step: the walk of the overlay upper dir, the layer tar written into the store and
# hashed (its diff id), the blob fsynced and renamed into place, the snapshot kept. The RUN
# itself is not counted. tar packs the same files from the context, which is in the page cache
# as the upper dir's files are: it reads and hashes, kiln also writes and syncs its blob.
# Rounds alternate the two, each kiln round in a fresh store, so that a noisy neighbour
# slows both alike. coreutils' sha256sum does not use the CPU's SHA instructions, kiln's sha2
# does: `tar -c | openssl dgst -sha256`, which does too, is the stricter row.
#
# The files (seeded random content): half the bytes in 8 big files, a sixth in 1 MB files, the
# rest in ~40,000 files of 0-8 KiB in a few hundred directories, with symlinks and hard links.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in python3 bc tar sha256sum openssl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
if [ "$quick" = 1 ]; then
  rounds=2 size_mb=5
else
  rounds=${ROUNDS:-7} size_mb=${SIZE_MB:-500}
fi
work=$(mktemp -d /var/tmp/kiln-bench-commit.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
ctx=$work/ctx
mkdir -p "$ctx"

# --- The files, the same every run (seeded).
python3 - "$ctx/data" "$size_mb" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(42)
os.makedirs(root)
def write(path, size):
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))
# Half the bytes in 8 big files, a sixth in 1 MB files, the rest in small files.
big = total // 2 // 8
os.makedirs(f"{root}/big")
for i in range(8):
    write(f"{root}/big/f{i}", big)
medium = min(1 << 20, total // 6)
os.makedirs(f"{root}/medium")
for i in range(max(1, total // 6 // medium)):
    write(f"{root}/medium/m{i}", medium)
left, n = total - 8 * big - total // 6, 0
while left > 0:
    d = f"{root}/small/d{n // 150:03}"
    if n % 150 == 0:
        os.makedirs(d)
    size = min(left, rng.randrange(0, 8193))
    write(f"{d}/s{n}", size)
    if n % 100 == 0:
        os.symlink(f"s{n}", f"{d}/link{n}")
    if n % 250 == 0:
        os.link(f"{d}/s{n}", f"{d}/hard{n}")
    left -= size
    n += 1
PY
files=$(find "$ctx/data" -type f | wc -l)
printf '%s\n' 'FROM bench-commit-base' \
  'RUN --mount=type=bind,target=/src cp -a /src/data /data' >"$ctx/Dockerfile"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

# One kiln build in a fresh store; sets commit_s and layer_size from its `committed` line.
kiln_commit() { # kiln binary
  local store=$work/store line
  KILN_ROOT=$store KILN=$1 scripts/make-busybox-base.sh bench-commit-base
  sync
  KILN_ROOT=$store "$1" --progress plain build --no-lint --no-cache "$ctx" >"$work/build.log" 2>&1 ||
    true
  line=$(grep ' committed ' "$work/build.log" | tail -1) || true
  [ -n "$line" ] || {
    echo "$1 build printed no 'committed' line:" >&2
    tail -5 "$work/build.log" >&2
    exit 1
  }
  commit_s=$(echo "$line" | sed -E 's/.* in ([0-9.]+)s$/\1/')
  layer_size=$(echo "$line" | sed -E 's/.*committed (.+) in [0-9.]+s$/\1/')
  rm -rf --one-file-system "$store"
  sync
}

kiln_s=() tar_s=() ossl_s=() base_s=()
for round in $(seq 1 "$rounds"); do
  kiln_commit "$KILN"; kiln_s+=("$commit_s")
  t=$(now); tar -C "$ctx" -cf - data | sha256sum >/dev/null; tar_s+=("$(elapsed "$t")")
  t=$(now); tar -C "$ctx" -cf - data | openssl dgst -sha256 >/dev/null; ossl_s+=("$(elapsed "$t")")
  report=$(printf 'round %s: kiln %.2fs, tar|sha256sum %.3fs, tar|openssl %.3fs' \
    "$round" "${kiln_s[-1]}" "${tar_s[-1]}" "${ossl_s[-1]}")
  if [ -n "${KILN_BASELINE:-}" ]; then
    kiln_commit "$KILN_BASELINE"; base_s+=("$commit_s")
    report+=$(printf ', baseline kiln %.2fs' "${base_s[-1]}")
  fi
  echo "$report"
done
tar_bytes=$(tar -C "$ctx" -cf - data | wc -c)

kiln_med=$(median "${kiln_s[@]}")
tar_med=$(median "${tar_s[@]}")
ossl_med=$(median "${ossl_s[@]}")
printf '\n%s files, %s MB of content; the layer: %s (tar of the same: %s bytes)\n' \
  "$files" "$size_mb" "$layer_size" "$tar_bytes"
printf '%-40s %10s %8s\n' "contender (median of $rounds)" "seconds" "ratio"
printf '%-40s %10.3f %8s\n' "tar -c | sha256sum" "$tar_med" "1.00"
printf '%-40s %10.3f %8.2f\n' "tar -c | openssl dgst -sha256" "$ossl_med" \
  "$(echo "$ossl_med / $tar_med" | bc -l)"
printf '%-40s %10.3f %8.2f\n' "kiln: commit of the RUN layer" "$kiln_med" \
  "$(echo "$kiln_med / $tar_med" | bc -l)"
printf '%-40s %10s %8.2f\n' "kiln against tar -c | openssl" "" \
  "$(echo "$kiln_med / $ossl_med" | bc -l)"
if [ -n "${KILN_BASELINE:-}" ]; then
  base_med=$(median "${base_s[@]}")
  printf '%-40s %10.3f %8.2f\n' "baseline kiln: commit of the RUN layer" "$base_med" \
    "$(echo "$base_med / $tar_med" | bc -l)"
fi
