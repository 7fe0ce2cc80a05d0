#!/usr/bin/env bash
# The one test command: installs what the tests need, starts the services they use, installs
# kiln on the PATH, runs every bench script in its quick mode, then every test.
# Usage: scripts/test.sh [extra cargo test args]   (with args, the bench runs are left out)
#
# Nothing that an earlier run left outside the clone is used: the Debian base tarball cache
# (KILN_BASE_CACHE) and the default store (KILN_ROOT) are fresh directories of this run,
# removed at its end; each test makes its own store. Only cargo's caches carry over.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root: the sandbox, overlay mounts and dockerd need it" >&2
  exit 1
fi

packages=(docker.io skopeo umoci mmdebstrap docker-registry busybox-static buildah apache2-utils
  openssl python3 bsdutils passt slirp4netns uidmap hyperfine jq bc gcc libc6-dev
  qemu-user-static binfmt-support git openssh-server openssh-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # No service may start while installing: openssh-server would leave an sshd on port 22
  # (the ssh tests run their own `sshd -i` per connection). A policy-rc.d that exits 101
  # is what invoke-rc.d and deb-systemd-invoke ask; one already there is left as it is.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || rc=$?
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
  # Nor after a reboot, where systemd starts the units the package enabled; only when this
  # run installed the server, so that a machine's own sshd is never touched.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
fi

scripts/start-dockerd.sh
scripts/enable-emulation.sh
# A rootless kiln's slirp4netns opens /dev/net/tun as the user (rootless tests, bench/build.sh):
# distributions with systemd make it 0666 through udev; a bare VM may leave it 0600.
chmod 0666 /dev/net/tun

run_dir=$(mktemp -d /var/tmp/kiln-test-run.XXXXXX)
# --one-file-system: never follow a mount a killed test may have left inside.
trap 'rm -rf --one-file-system "$run_dir"' EXIT
export KILN_BASE_CACHE=$run_dir/bases KILN_ROOT=$run_dir/store
echo "this run's base cache and store: $run_dir"

scripts/install-kiln.sh
export KILN_TEST_REQUIRE_ALL=1
cargo build --workspace --all-targets

# Every benchmark on tiny inputs, so that a refactor cannot break one unnoticed: each must run
# and print its table. No timing is judged.
if [ $# -eq 0 ]; then
  for bench in bench/*.sh; do
    echo "== $bench --quick"
    KILN=${PREFIX:-/usr/local}/bin/kiln "$bench" --quick
  done
else
  echo "bench quick runs left out: test arguments were given"
fi

cargo test --workspace "$@"
