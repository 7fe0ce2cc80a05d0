#!/usr/bin/env bash
# The main job: build the seed's custom Python base image, `my-python-base`, with kiln.
# On a fresh Debian 12 machine, as root. Installs kiln as /usr/local/bin/kiln, so the README's
# `kiln …` commands work in any new shell. Re-running it reuses every cached step.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: RUN steps use namespaces and overlay mounts" >&2
  exit 1
fi
# mmdebstrap makes the Debian base; slirp4netns is the RUN steps' private network.
missing=()
for tool in mmdebstrap slirp4netns; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/install-kiln.sh
export KILN=${PREFIX:-/usr/local}/bin/kiln
if ! "$KILN" inspect debian:bookworm >/dev/null 2>&1; then
  scripts/make-debian-base.sh debian:bookworm
fi
"$KILN" build -t my-python-base examples/python-base
"$KILN" images
