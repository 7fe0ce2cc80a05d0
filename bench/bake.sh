#!/usr/bin/env bash
# The Python family (examples/python-family: base, dev and app on bookworm and trixie) built by
# one `kiln bake`, against the same six targets built by `docker build` (BuildKit) one after
# another, each FROM the one before. Every build is cold (--no-cache); both read PyPI for the
# app's sdist. Prints the times and the ratio.
#
#   bench/bake.sh           (as root) the example as it is, on Debian bases made by
#                           scripts/make-debian-base.sh (mmdebstrap; the Debian archive and PyPI
#                           are needed)
#   bench/bake.sh --quick   (or BENCH_QUICK=1) the example's bake file over tiny busybox
#                           Dockerfiles: checks the script works; its times mean little
#
# /usr/bin/docker is the docker.io package's client, whose `DOCKER_BUILDKIT=1 docker build`
# needs no buildx plugin (as in bench/build.sh).
# docker has no `contexts = { base = "target:…" }` without buildx: its copies of the
# Dockerfiles name the images it built before (`FROM kiln-bench-bake/base:RELEASE`).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
tools=(/usr/bin/docker bc)
[ "$quick" = 1 ] || tools+=(mmdebstrap)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/test.sh installs it)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "docker is not running: scripts/start-dockerd.sh" >&2; exit 1; }
ca=${CA_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$ca" ] || { echo "missing: the CA bundle $ca (set CA_CERT)" >&2; exit 1; }
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
releases=(bookworm trixie)
work=$(mktemp -d /var/tmp/kiln-bake-bench.XXXXXX)
cleanup() {
  for r in "${releases[@]}"; do
    for t in debian base dev app; do docker rmi -f "kiln-bench-bake/$t:$r" >/dev/null 2>&1 || true; done
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export KILN_ROOT=$work/store
family=$PWD/examples/python-family

if [ "$quick" = 1 ]; then
  # The example's bake file (DIR points it at these Dockerfiles), busybox as both releases.
  family=$work/family
  mkdir -p "$family"/{base,dev,app}
  printf 'ARG RELEASE=bookworm\nFROM debian:${RELEASE}\nARG RELEASE\nRUN echo "$RELEASE" > /release\n' > "$family/base/Dockerfile"
  printf 'FROM base\nRUN echo dev > /dev-marker\n' > "$family/dev/Dockerfile"
  printf 'FROM dev AS build\nARG MARKUPSAFE_VERSION\nRUN --mount=type=secret,id=ca test -s /run/secrets/ca && echo "$MARKUPSAFE_VERSION" > /wheel\n\nFROM base\nCOPY --from=build /wheel /wheel\n' > "$family/app/Dockerfile"
  KILN=$KILN scripts/make-busybox-base.sh debian:bookworm "$work/busybox.tar" >/dev/null
  "$KILN" tag debian:bookworm debian:trixie
  for r in "${releases[@]}"; do docker import "$work/busybox.tar" "kiln-bench-bake/debian:$r" >/dev/null; done
else
  cache=${KILN_BASE_CACHE:-/var/cache/kiln-bases}
  for r in "${releases[@]}"; do
    KILN=$KILN scripts/make-debian-base.sh --suite "$r" "debian:$r" >/dev/null
    docker import --change 'CMD ["bash"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$cache/debian-$r-minbase.tar" "kiln-bench-bake/debian:$r" >/dev/null
  done
fi

# docker's copies: each FROM names the image docker built before it.
for r in "${releases[@]}"; do
  mkdir -p "$work/docker/$r"
  cp -r "$family"/{base,dev,app} "$work/docker/$r/"
  sed -i "s|^FROM debian:\${RELEASE}|FROM kiln-bench-bake/debian:\${RELEASE}|" "$work/docker/$r/base/Dockerfile"
  sed -i "s|^FROM base\$|FROM kiln-bench-bake/base:$r|; s|^FROM dev AS build\$|FROM kiln-bench-bake/dev:$r AS build|" \
    "$work/docker/$r/dev/Dockerfile" "$work/docker/$r/app/Dockerfile"
done

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

echo "== kiln bake: the six targets in one run =="
t=$(now)
DIR=$family CA_CERT=$ca "$KILN" --progress quiet bake --no-cache --no-lint \
  -f examples/python-family/docker-bake.hcl >/dev/null
kiln_time=$(elapsed "$t")

echo "== docker build: base, dev, app of each release, one after another =="
db() { DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache "$@" >/dev/null; }
t=$(now)
for r in "${releases[@]}"; do
  db --build-arg "RELEASE=$r" -t "kiln-bench-bake/base:$r" "$work/docker/$r/base"
  db -t "kiln-bench-bake/dev:$r" "$work/docker/$r/dev"
  db --secret "id=ca,src=$ca" --build-arg MARKUPSAFE_VERSION=3.0.2 \
    -t "kiln-bench-bake/app:$r" "$work/docker/$r/app"
done
docker_time=$(elapsed "$t")

# Both made working apps.
for r in "${releases[@]}"; do
  if [ "$quick" = 1 ]; then
    check=(cat /wheel /release)
    want=$'3.0.2\n'"$r"
  else
    check=()
    want='&lt;kiln&gt;'
  fi
  got=$("$KILN" run --rm "python-family/app:$r" ${check[@]+"${check[@]}"}) \
    || { echo "kiln run python-family/app:$r failed" >&2; exit 1; }
  [ "$got" = "$want" ] || { echo "kiln's app:$r printed $got, not $want" >&2; exit 1; }
  got=$(docker run --rm "kiln-bench-bake/app:$r" ${check[@]+"${check[@]}"}) \
    || { echo "docker run kiln-bench-bake/app:$r failed" >&2; exit 1; }
  [ "$got" = "$want" ] || { echo "docker's app:$r printed $got, not $want" >&2; exit 1; }
done

row() { printf '%-58s %8.2fs  %6.2fx\n' "$1" "$2" "$(echo "$2 / $3" | bc -l)"; }
echo
printf '%-58s %9s  %7s\n' "" "time" "/kiln"
row "kiln bake (6 targets, one run)" "$kiln_time" "$kiln_time"
row "docker build x6, one after another (BuildKit)" "$docker_time" "$kiln_time"
