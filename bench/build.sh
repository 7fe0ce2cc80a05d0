#!/usr/bin/env bash
# kiln against its peers on the seed's Python base image, side by side in one run, on the same
# Debian base: the chroot floor, kiln, docker build (legacy and BuildKit), buildah (chroot).
# Cold builds, fully cached rebuilds, and the commit of a ~500 MB RUN layer. Prints ratios.
#
#   bench/build.sh            (as root; needs docker.io, buildah, mmdebstrap, hyperfine)
#
# Network: the cold builds download the same packages from the Debian archive, each in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in /usr/bin/docker buildah hyperfine mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
scripts/start-dockerd.sh
cargo build --release -q -p kiln
KILN=$PWD/target/release/kiln
work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
trap 'umount -R "$work/chroot" 2>/dev/null || true; rm -rf "$work"' EXIT
export KILN_ROOT=$work/store
KILN=$KILN scripts/make-debian-base.sh debian:bookworm >/dev/null
tarball=/var/cache/kiln-bases/debian-bookworm-minbase.tar
ctx=$work/ctx
mkdir -p "$ctx"
cp examples/python-base/Dockerfile "$ctx/"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

# The seed's RUN, as one shell script: what every contender has to run.
run_script=$(python3 -c '
import re,sys
text=open(sys.argv[1]).read()
# Join continuations and drop comment lines inside them, as the Dockerfile parser does.
lines=[]; cur=""
for line in text.splitlines():
    s=line.strip()
    if cur and s.startswith("#"): continue
    if line.rstrip().endswith("\\"):
        cur+=line.rstrip()[:-1]+" "; continue
    lines.append(cur+line); cur=""
print([l for l in lines if l.startswith("RUN apt-get")][0][4:])
' "$ctx/Dockerfile")

echo "== cold builds (each downloads the same packages) =="
# 1. The floor: the seed's RUN in a plain chroot on the same base.
mkdir -p "$work/chroot"
tar -C "$work/chroot" -xf "$tarball"
cp /etc/resolv.conf "$work/chroot/etc/resolv.conf"
mount -t proc proc "$work/chroot/proc"
mount --rbind /dev "$work/chroot/dev"
t=$(now); chroot "$work/chroot" /bin/sh -c "$run_script && mkdir -p /app" >/dev/null 2>&1; floor=$(elapsed "$t")
umount -R "$work/chroot/proc" "$work/chroot/dev" 2>/dev/null || umount -lR "$work/chroot/dev" || true

# 2. kiln
t=$(now); "$KILN" --progress quiet build --no-cache -t bench/kiln "$ctx" >/dev/null; kiln_cold=$(elapsed "$t")
# kiln with the RUN's syncs reaching the disk (by default the sandbox makes them no-ops)
t=$(now); "$KILN" --progress quiet build --sync --no-cache -t bench/kiln-sync "$ctx" >/dev/null; kiln_sync_cold=$(elapsed "$t")

# 3. docker, legacy builder and BuildKit, on the same base
/usr/bin/docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" debian:bookworm >/dev/null
t=$(now); DOCKER_BUILDKIT=0 /usr/bin/docker build -q --no-cache -t bench/legacy "$ctx" >/dev/null; legacy_cold=$(elapsed "$t")
t=$(now); DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache -t bench/buildkit "$ctx" >/dev/null; buildkit_cold=$(elapsed "$t")

# 4. buildah with chroot isolation, base taken from the same tarball
"$KILN" save debian:bookworm > "$work/debian.tar"
buildah pull -q "docker-archive:$work/debian.tar" >/dev/null
buildah tag "$(buildah images -q --filter reference=debian:bookworm | head -1)" docker.io/library/debian:bookworm 2>/dev/null || true
t=$(now); buildah bud -q --isolation chroot --layers --no-cache -t bench/buildah "$ctx" >/dev/null; buildah_cold=$(elapsed "$t")

echo "== fully cached rebuilds (hyperfine, 10 runs each) =="
hyperfine -N --warmup 2 --runs 10 --export-json "$work/cached.json" \
  -n kiln "$KILN --progress quiet build -t bench/kiln $ctx" \
  -n docker-legacy "env DOCKER_BUILDKIT=0 /usr/bin/docker build -q -t bench/legacy $ctx" \
  -n docker-buildkit "env DOCKER_BUILDKIT=1 /usr/bin/docker build -q -t bench/buildkit $ctx" \
  -n buildah "buildah bud -q --isolation chroot --layers -t bench/buildah $ctx" >/dev/null
mean() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([r["mean"] for r in d["results"] if r["command"]==sys.argv[2]][0])' "$work/cached.json" "$1"; }
kiln_cached=$(mean kiln); legacy_cached=$(mean docker-legacy); buildkit_cached=$(mean docker-buildkit); buildah_cached=$(mean buildah)

echo "== commit of a ~500 MB RUN layer =="
big=$work/big
mkdir -p "$big"
printf 'FROM debian:bookworm\nRUN mkdir /data && for i in $(seq 1 25); do head -c 20000000 /dev/urandom > /data/f$i; done && cp -a /usr/lib /data/lib\n' > "$big/Dockerfile"
commit_line=$("$KILN" build --no-cache -t bench/big "$big" 2>&1 | grep ' committed ' | tail -1)
commit_s=$(echo "$commit_line" | sed -E 's/.* in ([0-9.]+)s$/\1/')
layer_dir=$(ls -dt "$KILN_ROOT"/snapshots/* | head -1)
sync; t=$(now); tar -C "$layer_dir" -cf - . | sha256sum >/dev/null; tar_s=$(elapsed "$t")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
printf '\n%-34s %10s %10s\n' "contender" "seconds" "ratio"
printf '%-34s %10.2f %10s\n' "cold: chroot floor" "$floor" "1.00"
printf '%-34s %10.2f %10s\n' "cold: kiln" "$kiln_cold" "$(ratio "$kiln_cold" "$floor")"
printf '%-34s %10.2f %10s\n' "cold: kiln --sync" "$kiln_sync_cold" "$(ratio "$kiln_sync_cold" "$floor")"
printf '%-34s %10.2f %10s\n' "cold: docker build (legacy)" "$legacy_cold" "$(ratio "$legacy_cold" "$floor")"
printf '%-34s %10.2f %10s\n' "cold: docker build (BuildKit)" "$buildkit_cold" "$(ratio "$buildkit_cold" "$floor")"
printf '%-34s %10.2f %10s\n' "cold: buildah bud (chroot)" "$buildah_cold" "$(ratio "$buildah_cold" "$floor")"
printf '%-34s %10.3f %10s\n' "cached: docker build (legacy)" "$legacy_cached" "1.00"
printf '%-34s %10.3f %10s\n' "cached: kiln" "$kiln_cached" "$(ratio "$kiln_cached" "$legacy_cached")"
printf '%-34s %10.3f %10s\n' "cached: docker build (BuildKit)" "$buildkit_cached" "$(ratio "$buildkit_cached" "$legacy_cached")"
printf '%-34s %10.3f %10s\n' "cached: buildah bud" "$buildah_cached" "$(ratio "$buildah_cached" "$legacy_cached")"
printf '%-34s %10.2f %10s\n' "commit: tar -c | sha256sum" "$tar_s" "1.00"
printf '%-34s %10.2f %10s\n' "commit: kiln ($(echo "$commit_line" | sed -E 's/.*committed ([^ ]+) in.*/\1/'))" "$commit_s" "$(ratio "$commit_s" "$tar_s")"
