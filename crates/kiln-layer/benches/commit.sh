#!/usr/bin/env bash
# Commit benchmark: kiln-layer's write_layer_from_upper (walk + tar + sha256,
# one pass) against `tar -cf - DIR | sha256sum` over the same files, in one run.
#
#   bash crates/kiln-layer/benches/commit.sh [DIR]
#
# DIR defaults to /tmp/kiln-commit-bench, generated once (~500 MB of mixed
# files: big, medium, many small, nested dirs, symlinks, hardlinks).
# Both sides read from a warm page cache; each is run RUNS times (default 5)
# and the median is compared. Target: ratio <= 1.5.
set -euo pipefail

DIR=${1:-/tmp/kiln-commit-bench}
RUNS=${RUNS:-5}
here=$(cd "$(dirname "$0")/../../.." && pwd)

if [ ! -f "$DIR/.complete" ]; then
    echo "generating ~500 MB of mixed files in $DIR ..." >&2
    rm -rf "$DIR"
    mkdir -p "$DIR"
    python3 - "$DIR" <<'PY'
import os, sys, random
root = sys.argv[1]
rnd = random.Random(42)
def blob(n):
    # Half random, half compressible, like real binaries and text.
    half = n // 2
    return os.urandom(half) + bytes((i * 31) % 251 for i in range(256)) * ((n - half) // 256 + 1)
total = 0
# 16 big files, 16 MiB each (256 MiB)
os.makedirs(f"{root}/usr/lib/big", exist_ok=True)
for i in range(16):
    data = blob(16 << 20)[: 16 << 20]
    open(f"{root}/usr/lib/big/lib{i}.so", "wb").write(data); total += len(data)
# 1500 medium files, 64-256 KiB (~240 MiB... capped below)
medium = blob(256 << 10)
for i in range(1500):
    d = f"{root}/usr/share/pkg{i % 60}/sub{i % 7}"
    os.makedirs(d, exist_ok=True)
    n = rnd.randint(16 << 10, 160 << 10)
    open(f"{d}/file{i}.dat", "wb").write(medium[:n]); total += n
# 20000 small files, 0-8 KiB, in deep trees
small = blob(8 << 10)
for i in range(20000):
    d = f"{root}/usr/lib/python3/site-packages/mod{i % 400}/{'sub/' * (i % 5)}"
    os.makedirs(d, exist_ok=True)
    n = rnd.randint(0, 8 << 10)
    open(f"{d}/f{i}.py", "wb").write(small[:n]); total += n
# symlinks and hardlinks
os.makedirs(f"{root}/usr/bin", exist_ok=True)
for i in range(500):
    os.symlink(f"../lib/big/lib{i % 16}.so", f"{root}/usr/bin/link{i}")
for i in range(200):
    os.link(f"{root}/usr/lib/big/lib{i % 16}.so", f"{root}/usr/bin/hard{i}")
print(f"{total / 1e6:.0f} MB in files", file=sys.stderr)
PY
    touch "$DIR/.complete"
fi

echo "building the example (release) ..." >&2
(cd "$here" && cargo build --release -q -p kiln-layer --example commit --example apply)
bin="$here/target/release/examples/commit"
apply_bin="$here/target/release/examples/apply"

du -sh --apparent-size "$DIR" >&2
echo "files: $(find "$DIR" -type f | wc -l), dirs: $(find "$DIR" -type d | wc -l)" >&2

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Warm the page cache (both read the same files).
tar -cf - -C "$DIR" . | cat > /dev/null  # (GNU tar skips reading files when writing to /dev/null)
"$bin" "$DIR" > /dev/null

kiln_times=(); tar_times=(); ossl_times=()
have_openssl=$(command -v openssl || true)
for i in $(seq "$RUNS"); do
    t0=$(now); tar -cf - -C "$DIR" . | sha256sum > /dev/null; t1=$(now)
    tar_times+=("$(echo "$t1 - $t0" | bc -l)")
    if [ -n "$have_openssl" ]; then
        t0=$(now); tar -cf - -C "$DIR" . | openssl dgst -sha256 > /dev/null; t1=$(now)
        ossl_times+=("$(echo "$t1 - $t0" | bc -l)")
    fi
    t0=$(now); out=$("$bin" "$DIR"); t1=$(now)
    kiln_times+=("$(echo "$t1 - $t0" | bc -l)")
done
k=$(printf '%s\n' "${kiln_times[@]}" | median)
t=$(printf '%s\n' "${tar_times[@]}" | median)
size=$(echo "$out" | awk '{print $2}')
printf 'kiln commit (walk+tar+sha256): median %.3fs over %d runs, %s bytes of tar  [%s]\n' "$k" "$RUNS" "$size" "$(echo "${kiln_times[@]}")"
printf 'tar -cf - | sha256sum:          median %.3fs over %d runs  [%s]\n' "$t" "$RUNS" "$(echo "${tar_times[@]}")"
printf 'ratio kiln/tar: %.2f (target <= 1.50)\n' "$(echo "$k / $t" | bc -l)"
if [ -n "$have_openssl" ]; then
    # A stricter peer: the same tar stream hashed by OpenSSL (SHA-NI when the CPU has it).
    o=$(printf '%s\n' "${ossl_times[@]}" | median)
    printf 'tar -cf - | openssl dgst -sha256: median %.3fs  [%s]\n' "$o" "$(echo "${ossl_times[@]}")"
    printf 'ratio kiln/(tar|openssl): %.2f\n' "$(echo "$k / $o" | bc -l)"
fi

# Apply (informational, no target): the same layer unpacked by kiln-layer and by GNU tar.
work=$(mktemp -d /tmp/kiln-apply-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" "$DIR" --out "$work/layer.tar" > /dev/null
mkdir "$work/a" "$work/b"
t0=$(now); "$apply_bin" "$work/layer.tar" "$work/a" > /dev/null; t1=$(now)
ka=$(echo "$t1 - $t0" | bc -l)
t0=$(now); tar -xpf "$work/layer.tar" -C "$work/b"; t1=$(now)
ta=$(echo "$t1 - $t0" | bc -l)
printf 'apply: kiln %.3fs, tar -xpf %.3fs, ratio %.2f (one run each, cold target dirs)\n' "$ka" "$ta" "$(echo "$ka / $ta" | bc -l)"
