#!/usr/bin/env bash
# Lets this machine run foreign-architecture binaries (arm64 RUN steps of a multi-platform
# build) through qemu-user: mounts binfmt_misc if it is not, and registers Debian's
# qemu-user-static emulators (with the F flag, which sandboxes need). Idempotent; as root.
set -euo pipefail
for p in qemu-user-static binfmt-support; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "needs $p: apt-get install qemu-user-static binfmt-support" >&2
    exit 1
  }
done
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/status" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
update-binfmts --enable >/dev/null 2>&1 || true
entry=$binfmt/qemu-aarch64
[ -e "$entry" ] || { echo "qemu-aarch64 is not registered with binfmt_misc" >&2; exit 1; }
grep -q '^flags: .*F' "$entry" || { echo "qemu-aarch64 is registered without the F flag" >&2; exit 1; }
echo "emulation: $(ls "$binfmt" | grep -c '^qemu-') qemu-user emulators registered"
