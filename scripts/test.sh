#!/usr/bin/env bash
# The one test command: installs what the tests need, starts the services they use, runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root: the sandbox, overlay mounts and dockerd need it" >&2
  exit 1
fi

packages=(docker.io skopeo umoci mmdebstrap docker-registry busybox-static buildah apache2-utils openssl python3 bsdutils gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

scripts/start-dockerd.sh

export KILN_TEST_REQUIRE_ALL=1
cargo build --workspace --all-targets
cargo test --workspace "$@"
