#!/usr/bin/env bash
# Two platforms from one command, side by side in one run: kiln's two-platform build against
# the same two platforms built one after the other by kiln, and against
# `buildah bud --platform linux/amd64,linux/arm64 --manifest`. Every build is cold
# (--no-cache); arm64 RUN steps run under qemu-user on an amd64 host. Prints the ratios.
#
#   bench/platforms.sh           (as root) the seed's Python base on Debian bookworm for
#                                amd64 and arm64 (mmdebstrap; the Debian archive is needed)
#   bench/platforms.sh --quick   (or BENCH_QUICK=1) a busybox base and a tiny Dockerfile:
#                                checks the script works; times nothing
#
# buildah 1.28 cannot take FROM from a local manifest list, so it pulls the same two-platform
# base from a docker-registry on 127.0.0.1; that pull is part of its time (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in buildah docker-registry python3 bc mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
scripts/enable-emulation.sh >/dev/null
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
work=$(mktemp -d /var/tmp/kiln-platforms.XXXXXX)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && { kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; }
  buildah manifest rm kiln-bench-platforms >/dev/null 2>&1 || true
  buildah rmi -a -f >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
ctx=$work/ctx
mkdir -p "$ctx"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

base=127.0.0.1:$port/bench/base:1
if [ "$quick" = 1 ]; then
  KILN=$KILN scripts/make-busybox-base.sh --arch amd64 "$base" >/dev/null
  KILN=$KILN scripts/make-busybox-base.sh --arch arm64 "$base" >/dev/null
  printf 'FROM %s\nRUN uname -m > /machine && sha256sum /bin/busybox > /sum\nCMD ["sh"]\n' "$base" > "$ctx/Dockerfile"
else
  KILN=$KILN scripts/make-debian-base.sh --arch amd64 "$base" >/dev/null
  KILN=$KILN scripts/make-debian-base.sh --arch arm64 "$base" >/dev/null
  sed "s|^FROM .*|FROM $base|" examples/python-base/Dockerfile > "$ctx/Dockerfile"
fi
"$KILN" --progress quiet push "$base" >/dev/null

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
kb() { "$KILN" --progress quiet build --no-lint --no-cache "$@" >/dev/null; }

echo "== kiln: both platforms in one build =="
t=$(now); kb --platform linux/amd64,linux/arm64 -t bench/both "$ctx"; both=$(elapsed "$t")
echo "== kiln: one platform, then the other =="
t=$(now); kb --platform linux/amd64 -t bench/amd64 "$ctx"; amd=$(elapsed "$t")
t=$(now); kb --platform linux/arm64 -t bench/arm64 "$ctx"; arm=$(elapsed "$t")
in_a_row=$(echo "$amd + $arm" | bc -l)
echo "== buildah bud --platform linux/amd64,linux/arm64 --manifest =="
t=$(now)
buildah bud -q --isolation chroot --tls-verify=false --no-cache \
  --platform linux/amd64,linux/arm64 --manifest kiln-bench-platforms "$ctx" >/dev/null
buildah_both=$(elapsed "$t")

machine=$("$KILN" run --rm --platform linux/arm64 bench/both uname -m)
[ "$machine" = aarch64 ] || { echo "the arm64 image runs as $machine, not aarch64" >&2; exit 1; }

row() { printf '%-52s %8.2fs  %6.2fx\n' "$1" "$2" "$(echo "$2 / $3" | bc -l)"; }
echo
printf '%-52s %9s  %7s\n' "" "time" "/kiln"
row "kiln --platform linux/amd64,linux/arm64" "$both" "$both"
row "kiln amd64 alone" "$amd" "$both"
row "kiln arm64 alone (RUN under qemu-user)" "$arm" "$both"
row "kiln amd64 then arm64 (two builds in a row)" "$in_a_row" "$both"
row "buildah bud --platform …,… --manifest" "$buildah_both" "$both"
