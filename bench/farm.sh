#!/usr/bin/env bash
# A farm of runners sharing one registry (issue 14): N kiln containers at once (kiln's own
# image, docker's default security: no --privileged, no --cap-add; --network host only to reach
# the registry on 127.0.0.1), each building a different image of one family that shares the
# seed's base, all with --cache-from and --cache-to type=registry at the same ref.
#
#   wave 1: every runner cold (empty store, empty cache);
#   wave 2: the same builds again, each in a fresh container (empty store): what it reuses
#           comes from the registry cache the first wave wrote, concurrently.
#
# Prints per wave: wall time, steps CACHED / steps run per build (counted from each build's
# output), and failed builds (any failure makes the script fail).
#
#   bench/farm.sh            (as root; docker.io, docker-registry, mmdebstrap; network for apt)
#                            the family: the seed's python base (examples/python-base) plus one
#                            step of each image's own, on the Debian base
#   bench/farm.sh --quick    (or BENCH_QUICK=1) a busybox base and one-line steps: checks the
#                            script works; its times say little
# N=4 by default (FARM_N). KILN=path/to/kiln is the kiln put into the image (default: release
# build); FARM_IMAGE=tag uses an image already loaded into docker instead.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
n=${FARM_N:-4}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in /usr/bin/docker docker-registry python3 bc; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
scripts/start-dockerd.sh
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
docker() { /usr/bin/docker "$@"; }
work=$(mktemp -d /var/tmp/kiln-farm.XXXXXX)
registry_pid=
image=${FARM_IMAGE:-}
own_image=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  [ -n "$own_image" ] && docker rmi -f "$own_image" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store

if [ -z "$image" ]; then
  own_image=kiln-farm:$$
  KILN=$KILN scripts/build-kiln-image.sh "$own_image" >/dev/null
  image=$own_image
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $host
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  [ -d /proc/$registry_pid ] || { cat "$work/registry.log" >&2; exit 1; }
  python3 -c 'import time; time.sleep(0.1)'
done

# The family's shared part: the seed's Dockerfile (quick: two busybox steps), on its base in
# the registry.
if [ "$quick" = 1 ]; then
  KILN=$KILN scripts/make-busybox-base.sh farm-base >/dev/null
  "$KILN" push farm-base "$host/base/farm:1" >/dev/null 2>&1
  shared="RUN echo shared > /shared && mkdir -p /app
WORKDIR /app"
else
  KILN=$KILN scripts/make-debian-base.sh farm-base >/dev/null
  "$KILN" push farm-base "$host/base/farm:1" >/dev/null 2>&1
  shared=$(sed -n '/^RUN apt-get update/,$p' examples/python-base/Dockerfile)
fi
cache="type=registry,ref=$host/cache/family:main"
for i in $(seq "$n"); do
  mkdir -p "$work/ctx$i"
  {
    printf 'FROM %s\n' "$host/base/farm:1"
    printf '%s\n' "$shared"
    printf 'RUN echo "member %s of the family" > /app/member && cat /app/member\n' "$i"
  } >"$work/ctx$i/Dockerfile"
done

# Wave W: runner i builds member (i + W - 1) of the family, so that in wave 2 each image is
# built by another runner (a fresh container, an empty store) than the one that built it first.
wave() {
  local w=$1 start end failed=0 pids=() m
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    m=$(( (i + w - 2) % n + 1 ))
    docker run --rm --network host -v "$work/ctx$m:/ctx:ro" "$image" \
      build --progress plain --cache-from "$cache" --cache-to "$cache" \
      -t "$host/family/app$m:wave$w" --push /ctx >"$work/wave$w-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq "$n"); do
    if ! wait "${pids[$((i - 1))]}"; then
      failed=$((failed + 1))
      echo "wave $w, runner $i failed:" >&2
      tail -20 "$work/wave$w-$i.log" >&2
    fi
  done
  end=$(date +%s.%N)
  local cached=0 ran=0
  for i in $(seq "$n"); do
    c=$(grep -cE '^#[0-9]+ CACHED$' "$work/wave$w-$i.log" || true)
    r=$(grep -cE '^#[0-9]+ DONE ' "$work/wave$w-$i.log" || true)
    grep -q '^isolation: chroot' "$work/wave$w-$i.log" || { echo "runner $i did not use chroot" >&2; failed=$((failed + 1)); }
    printf '  runner %s (member %s): %s steps CACHED, %s steps done\n' "$i" "$(( (i + w - 2) % n + 1 ))" "$c" "$r"
    cached=$((cached + c))
    ran=$((ran + r))
  done
  printf 'wave %s: %s runners, wall %.1f s, %s steps CACHED in all, %s failed builds\n' \
    "$w" "$n" "$(echo "$end - $start" | bc)" "$cached" "$failed"
  eval "wall$w=$(echo "$end - $start" | bc)" "cached$w=$cached" "failed$w=$failed"
}

echo "farm: $n runners of $image against $host, cache $cache"
wave 1
wave 2
printf 'wave 2 / wave 1 wall time: %.2f\n' "$(echo "$wall2 / $wall1" | bc -l)"
# The cache: its ref and the content-addressed entries the runners wrote
# (crates/kiln-registry/src/cache.rs).
python3 - "$host" <<'PY'
import json, sys, urllib.request
tags = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/v2/cache/family/tags/list"))["tags"] or []
print(f"cache repository tags: {len(tags)} ({sum(t.startswith('main-kc-') for t in tags)} entries, "
      f"ref {'present' if 'main' in tags else 'missing'})")
PY
if [ "$failed1" -ne 0 ] || [ "$failed2" -ne 0 ]; then
  echo "farm: failed builds" >&2
  exit 1
fi
# Every step of wave 2 but each FROM is found in the registry cache.
if [ "$cached2" -eq 0 ]; then
  echo "farm: wave 2 found nothing in the registry cache" >&2
  exit 1
fi
