#!/usr/bin/env bash
# Independent stages, side by side in one run: kiln, docker build with BuildKit, and
# `buildah bud --jobs`, on the same busybox base, every build cold (--no-cache).
#
#   (a) four stages that each wait on I/O (a sleep of W seconds): the floor is one stage alone;
#   (b) four CPU-bound stages (sha256 over zeros): the floor is max(one stage, four stages' CPU
#       time / cores), with a stage's CPU time (user + system, every process of the build)
#       measured, since `head | sha256sum` keeps more than one core busy.
#
# kiln and buildah get --jobs 4 (one per stage); kiln's default (--jobs = cores) is shown too.
# kiln's targets (issue 11): (a) within 1.1x the slowest stage alone and faster than BuildKit;
# (b) within 1.1x its floor. Prints every time and its ratio to the floor.
#
#   bench/stages.sh            (as root; needs docker.io, buildah, busybox-static, python3)
#   bench/stages.sh --quick    (or BENCH_QUICK=1) waits and work cut to a fraction of a second,
#                              one run each: checks the script works; times nothing
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in /usr/bin/docker buildah python3 bc; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
scripts/start-dockerd.sh
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
docker() { /usr/bin/docker "$@"; }
work=$(mktemp -d /var/tmp/kiln-stages.XXXXXX)
tag=kiln-stages-$$
buildah_base=
cleanup() {
  docker rmi -f "$tag/base" "$tag/io" "$tag/cpu" "$tag/one" >/dev/null 2>&1 || true
  buildah rmi -f "$tag/io" "$tag/cpu" ${buildah_base:+"$buildah_base"} >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
cores=$(nproc)

if [ "$quick" = 1 ]; then wait_s=0.2 cpu_mb=20 runs=1; else wait_s=3 cpu_mb=1500 runs=3; fi

base=$tag/base
KILN=$KILN scripts/make-busybox-base.sh "$base" "$work/base.tar" >/dev/null
docker import "$work/base.tar" "$base" >/dev/null
"$KILN" save "$base" > "$work/base-image.tar"
buildah_base=$(buildah pull -q "docker-archive:$work/base-image.tar")
buildah tag "$buildah_base" "$base" 2>/dev/null || true

# Four stages doing $1 each, and a last stage that copies their results together.
dockerfile() {
  local work_line=$1
  for s in 1 2 3 4; do
    printf 'FROM %s AS s%s\nRUN %s && echo %s > /out\n' "$base" "$s" "${work_line//@/$s}" "$s"
  done
  printf 'FROM %s\n' "$base"
  for s in 1 2 3 4; do printf 'COPY --from=s%s /out /out%s\n' "$s" "$s"; done
}
mkdir -p "$work/io" "$work/cpu" "$work/one"
dockerfile "sleep $wait_s" > "$work/io/Dockerfile"
dockerfile "head -c ${cpu_mb}000000 /dev/zero | sha256sum > /h@" > "$work/cpu/Dockerfile"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The median of $runs timed runs of a command.
timed() {
  local times=() t
  for _ in $(seq "$runs"); do
    t=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@" >&2 || true; exit 1; }
    times+=("$(echo "$(now) - $t" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | median
}
# The median CPU seconds (user + system of the command and every process it waited for, which
# includes a build's RUN processes) of $runs runs.
cpu_timed() {
  local cpus=() TIMEFORMAT='%U %S' usage
  for _ in $(seq "$runs"); do
    usage=$({ time "$@" >/dev/null 2>&1; } 2>&1) || { echo "failed: $*" >&2; exit 1; }
    cpus+=("$(echo "$usage" | awk '{print $1 + $2}')")
  done
  printf '%s\n' "${cpus[@]}" | median
}
kiln_build() { "$KILN" --progress quiet build --no-lint --no-cache "$@"; }

echo "== (a) four stages waiting ${wait_s}s each; (b) four stages hashing ${cpu_mb} MB each; $cores cores =="
declare -A t
for kind in io cpu; do
  ctx=$work/$kind
  t[$kind-one]=$(timed kiln_build --target s1 -t "bench/$kind-one" "$ctx")
  t[$kind-onecpu]=$(cpu_timed kiln_build --target s1 -t "bench/$kind-one" "$ctx")
  t[$kind-kiln]=$(timed kiln_build --jobs 4 -t "bench/$kind" "$ctx")
  t[$kind-kilndefault]=$(timed kiln_build -t "bench/$kind" "$ctx")
  t[$kind-kiln1]=$(timed kiln_build --jobs 1 -t "bench/$kind" "$ctx")
  t[$kind-buildkit]=$(timed env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache -t "$tag/$kind" "$ctx")
  t[$kind-buildah]=$(timed buildah bud -q --isolation chroot --layers --no-cache --jobs 4 -t "$tag/$kind" "$ctx")
done
# (b)'s floor: four stages need four times one stage's CPU seconds, spread over the cores, and
# never less than one stage's wall time.
floor_io=${t[io-one]}
floor_cpu=$(echo "x=${t[cpu-onecpu]} * 4 / $cores; if (x < ${t[cpu-one]}) x=${t[cpu-one]}; x" | bc -l)

row() { printf '%-44s %8.2fs  %6.2fx\n' "$1" "$2" "$(echo "$2 / $3" | bc -l)"; }
echo
printf '%-44s %9s  %7s\n' "" "time" "/floor"
row "(a) floor: one stage alone (kiln)" "$floor_io" "$floor_io"
row "(a) kiln --jobs 4" "${t[io-kiln]}" "$floor_io"
row "(a) kiln (default: --jobs $cores, the cores)" "${t[io-kilndefault]}" "$floor_io"
row "(a) kiln --jobs 1 (stages one at a time)" "${t[io-kiln1]}" "$floor_io"
row "(a) docker build (BuildKit)" "${t[io-buildkit]}" "$floor_io"
row "(a) buildah bud --jobs 4" "${t[io-buildah]}" "$floor_io"
printf '%-44s %8.2fs\n' "(b) one stage alone: wall (kiln)" "${t[cpu-one]}"
printf '%-44s %8.2fs\n' "(b) one stage alone: CPU seconds (kiln)" "${t[cpu-onecpu]}"
row "(b) floor: max(one stage, 4 x CPU / cores)" "$floor_cpu" "$floor_cpu"
row "(b) kiln --jobs 4" "${t[cpu-kiln]}" "$floor_cpu"
row "(b) kiln (default: --jobs $cores)" "${t[cpu-kilndefault]}" "$floor_cpu"
row "(b) kiln --jobs 1" "${t[cpu-kiln1]}" "$floor_cpu"
row "(b) docker build (BuildKit)" "${t[cpu-buildkit]}" "$floor_cpu"
row "(b) buildah bud --jobs 4" "${t[cpu-buildah]}" "$floor_cpu"
printf '%-44s %8.2fx\n' "(a) kiln / BuildKit" "$(echo "${t[io-kiln]} / ${t[io-buildkit]}" | bc -l)"
printf '%-44s %8.2fx\n' "(b) kiln / BuildKit" "$(echo "${t[cpu-kiln]} / ${t[cpu-buildkit]}" | bc -l)"
