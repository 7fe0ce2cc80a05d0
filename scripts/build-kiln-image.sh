#!/usr/bin/env bash
# Builds kiln's own image (images/kiln/Dockerfile) with kiln, and loads it into docker.
# Usage: scripts/build-kiln-image.sh [TAG] (default kiln:dev). Needs root and docker.
# KILN=path/to/kiln picks the kiln that builds (and goes into) the image (default
# target/debug/kiln, built with `cargo build -p kiln` if missing); its debug info is stripped
# on the way in. KILN_ROOT picks the store as usual. The Debian base comes from
# scripts/make-debian-base.sh (its cached tarball when there is one).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-kiln:dev}
kiln=${KILN:-$here/target/debug/kiln}
if [ ! -x "$kiln" ]; then
  (cd "$here" && cargo build -p kiln)
fi
command -v docker >/dev/null || { echo "build-kiln-image: needs docker" >&2; exit 1; }
ctx=$(mktemp -d /var/tmp/kiln-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$here/images/kiln/Dockerfile" "$ctx/Dockerfile"
objcopy --strip-debug "$kiln" "$ctx/kiln"
KILN=$kiln bash "$here/scripts/make-debian-base.sh" debian:bookworm >/dev/null
"$kiln" build --load -t "$tag" "$ctx"
docker image inspect --format '{{.Id}} {{.Size}}' "$tag"
