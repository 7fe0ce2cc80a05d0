#!/usr/bin/env bash
# kiln against its peers on the seed's Python base image, side by side in one run, on the same
# Debian base: the chroot floor, kiln, docker build (legacy and BuildKit), buildah (chroot),
# and kiln rootless (a throwaway user with subuid/subgid ranges, removed at the end).
# Cold builds, fully cached rebuilds, a CMD-only change, and the commit of a ~500 MB RUN layer.
# Unprivileged rows: kiln's own image under docker's default security (--isolation chroot),
# cold and cached, against the root build (the cached row includes a `docker run`, also shown
# alone). Prints ratios.
#
#   bench/build.sh            (as root; needs docker.io, buildah, mmdebstrap, hyperfine)
#   bench/build.sh --quick    (or BENCH_QUICK=1) the same rows on a busybox base, a tiny
#                             Dockerfile and a 5 MB layer, two runs each: checks the script
#                             works and prints its table, offline; times nothing
#
# Network: the cold builds download the same packages from the Debian archive, each in turn.
#
# Adding a row: measure into a variable in a section of its own, then add
# `row "label" "$seconds" "$reference_seconds"` to the table at the end (the ratio is seconds /
# reference; leave the reference out for a row that is itself the reference).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
tools=(/usr/bin/docker buildah hyperfine python3 bc useradd setpriv newuidmap objcopy)
[ "$quick" = 1 ] || tools+=(mmdebstrap)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
scripts/start-dockerd.sh
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
docker() { /usr/bin/docker "$@"; }
work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
tag=kiln-bench-$$
buildah_base=
bench_user=
cleanup() {
  [ -z "$bench_user" ] || userdel "$bench_user" 2>/dev/null || true
  umount -R "$work/chroot/proc" "$work/chroot/dev" 2>/dev/null || true
  docker rmi -f "$tag/legacy" "$tag/buildkit" "$tag/base" "$tag/kiln" >/dev/null 2>&1 || true
  buildah rmi -f "$tag/buildah" ${buildah_base:+"$buildah_base"} >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
ctx=$work/ctx
mkdir -p "$ctx"

# --- Inputs: the base (one rootfs tarball for every contender), the Dockerfile, the big layer.
if [ "$quick" = 1 ]; then
  base=$tag/base
  base_tar=$work/base.tar
  KILN=$KILN scripts/make-busybox-base.sh "$base" "$base_tar"
  printf '%s\n' "FROM $base" \
    'RUN mkdir -p /data && for i in 1 2 3 4 5; do head -c 200000 /dev/urandom > /data/f$i; done' \
    'RUN mkdir -p /app' 'WORKDIR /app' 'CMD ["sh"]' >"$ctx/Dockerfile"
  big_files=5 big_file_bytes=1000000 big_extra=""
  runs=(--warmup 1 --runs 2)
else
  base=debian:bookworm
  KILN=$KILN scripts/make-debian-base.sh "$base" >/dev/null
  base_tar=${KILN_BASE_CACHE:-/var/cache/kiln-bases}/debian-bookworm-minbase.tar
  cp examples/python-base/Dockerfile "$ctx/"
  big_files=25 big_file_bytes=20000000 big_extra=" && cp -a /usr/lib /data/lib"
  runs=(--warmup 2 --runs 10)
fi
base_changes=(--change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

# The Dockerfile's first RUN, as one shell script: what every contender has to run.
run_script=$(python3 -c '
import sys
text=open(sys.argv[1]).read()
# Join continuations and drop comment lines inside them, as the Dockerfile parser does.
lines=[]; cur=""
for line in text.splitlines():
    s=line.strip()
    if cur and s.startswith("#"): continue
    if line.rstrip().endswith("\\"):
        cur+=line.rstrip()[:-1]+" "; continue
    lines.append(cur+line); cur=""
print([l for l in lines if l.startswith("RUN ")][0][4:])
' "$ctx/Dockerfile")

echo "== cold builds (with the Debian base, each downloads the same packages) =="
# 1. The floor: the RUN in a plain chroot on the same base.
mkdir -p "$work/chroot"
tar -C "$work/chroot" -xf "$base_tar"
cp /etc/resolv.conf "$work/chroot/etc/resolv.conf"
mkdir -p "$work/chroot/proc" "$work/chroot/dev"
mount -t proc proc "$work/chroot/proc"
mount --rbind /dev "$work/chroot/dev"
t=$(now); chroot "$work/chroot" /bin/sh -c "$run_script && mkdir -p /app" >/dev/null 2>&1; floor=$(elapsed "$t")
umount -R "$work/chroot/proc" "$work/chroot/dev" 2>/dev/null || umount -lR "$work/chroot/dev" || true

# 2. kiln
t=$(now); "$KILN" --progress quiet build --no-cache -t bench/kiln "$ctx" >/dev/null; kiln_cold=$(elapsed "$t")
# kiln with the RUN's syncs reaching the disk (by default the sandbox makes them no-ops)
t=$(now); "$KILN" --progress quiet build --sync --no-cache -t bench/kiln-sync "$ctx" >/dev/null; kiln_sync_cold=$(elapsed "$t")
# kiln on the host's network: what the private network (slirp4netns) costs
t=$(now); "$KILN" --progress quiet build --network host --no-cache -t bench/kiln-hostnet "$ctx" >/dev/null; kiln_hostnet_cold=$(elapsed "$t")

# 3. docker, legacy builder and BuildKit, on the same base
docker import "${base_changes[@]}" "$base_tar" "$base" >/dev/null
t=$(now); DOCKER_BUILDKIT=0 docker build -q --no-cache -t "$tag/legacy" "$ctx" >/dev/null; legacy_cold=$(elapsed "$t")
t=$(now); DOCKER_BUILDKIT=1 docker build -q --no-cache -t "$tag/buildkit" "$ctx" >/dev/null; buildkit_cold=$(elapsed "$t")

# 4. buildah with chroot isolation, base taken from the same tarball
"$KILN" save "$base" > "$work/base-image.tar"
buildah_base=$(buildah pull -q "docker-archive:$work/base-image.tar")
buildah tag "$buildah_base" "docker.io/${base/#debian:/library/debian:}" 2>/dev/null || true
t=$(now); buildah bud -q --isolation chroot --layers --no-cache -t "$tag/buildah" "$ctx" >/dev/null; buildah_cold=$(elapsed "$t")

# 5. kiln rootless: a normal user with subordinate ranges (useradd gives it the next free
# ones), its own store, the same base (kiln save | kiln load), the same Dockerfile.
bench_user=kb$$
useradd --no-create-home --home-dir "$work/rootless" "$bench_user"
mkdir -p "$work/rootless/ctx"
cp "$ctx/Dockerfile" "$work/rootless/ctx/"
"$KILN" save -o "$work/rootless/base.tar" "$base"
chown -R "$bench_user:" "$work/rootless"
chmod 711 "$work"
# hyperfine -N runs it without a shell: everything on one command line.
as_user="setpriv --reuid=$bench_user --regid=$bench_user --init-groups env HOME=$work/rootless KILN_ROOT=$work/rootless/store $KILN"
$as_user --progress quiet load -i "$work/rootless/base.tar" >/dev/null
t=$(now); $as_user --progress quiet build --no-cache -t bench/kiln "$work/rootless/ctx" >/dev/null; rootless_cold=$(elapsed "$t")

echo "== fully cached rebuilds (hyperfine, ${runs[*]}) =="
hyperfine -N "${runs[@]}" --export-json "$work/cached.json" \
  -n kiln "$KILN --progress quiet build -t bench/kiln $ctx" \
  -n kiln-rootless "$as_user --progress quiet build -t bench/kiln $work/rootless/ctx" \
  -n docker-legacy "env DOCKER_BUILDKIT=0 /usr/bin/docker build -q -t $tag/legacy $ctx" \
  -n docker-buildkit "env DOCKER_BUILDKIT=1 /usr/bin/docker build -q -t $tag/buildkit $ctx" \
  -n buildah "buildah bud -q --isolation chroot --layers -t $tag/buildah $ctx" >/dev/null
mean() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([r["mean"] for r in d["results"] if r["command"]==sys.argv[2]][0])' "$work/cached.json" "$1"; }
kiln_cached=$(mean kiln); rootless_cached=$(mean kiln-rootless); legacy_cached=$(mean docker-legacy); buildkit_cached=$(mean docker-buildkit); buildah_cached=$(mean buildah)

echo "== a CMD-only change (every RUN cached, a new config) =="
sed 's/^CMD .*/CMD ["true"]/' "$ctx/Dockerfile" > "$work/Dockerfile.cmd"
t=$(now); "$KILN" --progress quiet build -f "$work/Dockerfile.cmd" -t bench/kiln-cmd "$ctx" >/dev/null; kiln_cmd=$(elapsed "$t")

echo "== commit of a big RUN layer =="
big=$work/big
mkdir -p "$big"
printf 'FROM %s\nRUN mkdir /data && for i in $(seq 1 %s); do head -c %s /dev/urandom > /data/f$i; done%s\n' \
  "$base" "$big_files" "$big_file_bytes" "$big_extra" > "$big/Dockerfile"
commit_line=$("$KILN" --progress plain build --no-cache -t bench/big "$big" 2>&1 | grep ' committed ' | tail -1)
[ -n "$commit_line" ] || { echo "kiln build printed no 'committed' line" >&2; exit 1; }
commit_s=$(echo "$commit_line" | sed -E 's/.* in ([0-9.]+)s$/\1/')
commit_size=$(echo "$commit_line" | sed -E 's/.*committed ([^ ]+) in.*/\1/')
# The same files, from the image's top layer (kiln save's docker-archive), for tar to pack.
"$KILN" save -o "$work/big.tar" bench/big
mkdir -p "$work/big-layer"
python3 - "$work/big.tar" "$work/big-layer.tar" <<'PY'
import json, shutil, sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    manifest = json.load(archive.extractfile("manifest.json"))
    with archive.extractfile(manifest[0]["Layers"][-1]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
tar -C "$work/big-layer" -xf "$work/big-layer.tar"
sync; t=$(now); tar -C "$work/big-layer" -cf - . | sha256sum >/dev/null; tar_s=$(elapsed "$t")

echo "== unprivileged: kiln's image under docker's default security (--isolation chroot) =="
kiln_image=$tag/kiln
if [ "$quick" = 1 ]; then
  # Offline: kiln and the libraries it links, on the busybox base (kiln's own image,
  # images/kiln/Dockerfile, needs the Debian base and apt).
  img=$work/kiln-image
  mkdir -p "$img"
  objcopy --strip-debug "$KILN" "$img/kiln"
  {
    printf 'FROM %s\nCOPY kiln /usr/local/bin/kiln\n' "$base"
    for lib in $(ldd "$KILN" | grep -o '/[^ ]*' | sort -u); do
      cp -L "$lib" "$img/$(basename "$lib")"
      printf 'COPY %s %s\n' "$(basename "$lib")" "$lib"
    done
    printf 'ENTRYPOINT ["/usr/local/bin/kiln"]\n'
  } >"$img/Dockerfile"
  "$KILN" --progress quiet build --load -t "$kiln_image" "$img" >/dev/null
else
  KILN=$KILN scripts/build-kiln-image.sh "$kiln_image" >/dev/null
fi
ustore=$work/unprivileged-store
"$KILN" save "$base" | "$KILN" --root "$ustore" load >/dev/null
# No --privileged, no --cap-add, docker's seccomp profile; the host's network only for the
# same downloads as the root build's (a container's bridge would add its own NAT).
unprivileged=(/usr/bin/docker run --rm --network host -v "$ctx:/ctx:ro" -v "$ustore:/var/lib/kiln"
  "$kiln_image" --root /var/lib/kiln --progress quiet build -t bench/kiln-unprivileged /ctx)
t=$(now); "${unprivileged[@]}" --no-cache >/dev/null; unprivileged_cold=$(elapsed "$t")
hyperfine -N "${runs[@]}" --export-json "$work/unprivileged.json" \
  -n unprivileged "${unprivileged[*]}" \
  -n docker-run "/usr/bin/docker run --rm $kiln_image --version" >/dev/null
unprivileged_mean() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([r["mean"] for r in d["results"] if r["command"]==sys.argv[2]][0])' "$work/unprivileged.json" "$1"; }
unprivileged_cached=$(unprivileged_mean unprivileged); docker_run_s=$(unprivileged_mean docker-run)

# --- The table.
rows=()
row() { # label seconds [reference seconds]
  local ratio=1.00
  [ -z "${3:-}" ] || ratio=$(printf '%.2f' "$(echo "$2 / $3" | bc -l)")
  rows+=("$(printf '%-40s %10.3f %8s' "$1" "$2" "$ratio")")
}
row "cold: chroot floor" "$floor"
row "cold: kiln" "$kiln_cold" "$floor"
row "cold: kiln --sync (RUN's syncs kept)" "$kiln_sync_cold" "$floor"
row "cold: kiln --network host" "$kiln_hostnet_cold" "$floor"
row "cold: docker build (legacy)" "$legacy_cold" "$floor"
row "cold: docker build (BuildKit)" "$buildkit_cold" "$floor"
row "cold: buildah bud (chroot)" "$buildah_cold" "$floor"
row "cold: kiln rootless (vs kiln)" "$rootless_cold" "$kiln_cold"
row "cached: docker build (legacy)" "$legacy_cached"
row "cached: kiln" "$kiln_cached" "$legacy_cached"
row "cached: docker build (BuildKit)" "$buildkit_cached" "$legacy_cached"
row "cached: buildah bud" "$buildah_cached" "$legacy_cached"
row "cached: kiln rootless (vs kiln)" "$rootless_cached" "$kiln_cached"
row "CMD-only change: kiln" "$kiln_cmd" "$legacy_cached"
row "cold: kiln in docker, unprivileged" "$unprivileged_cold" "$kiln_cold"
row "cached: kiln in docker, unprivileged" "$unprivileged_cached" "$kiln_cached"
row "docker run of kiln's image, no build" "$docker_run_s"
row "commit: tar -c | sha256sum" "$tar_s"
row "commit: kiln ($commit_size)" "$commit_s" "$tar_s"
printf '\n%-40s %10s %8s\n' "contender" "seconds" "ratio"
printf '%s\n' "${rows[@]}"
