#!/usr/bin/env bash
# Makes a tiny offline base image from busybox-static: /bin/busybox, its applets as symlinks,
# /etc/passwd and /etc/group. For the bench scripts' quick modes (no network, no cache).
# Usage: scripts/make-busybox-base.sh [--arch ARCH] NAME [TARBALL]
#        imports it into kiln's store as NAME (KILN=path/to/kiln, KILN_ROOT as usual); with
#        TARBALL, the rootfs tar is also kept there, for tools other than kiln.
#        --arch arm64 (any Debian architecture but the host's) takes that architecture's
#        busybox-static from the Debian archive with mmdebstrap (extracted, nothing run) and
#        imports it with --platform linux/ARCH: into NAME's index when NAME exists for another
#        platform.
set -euo pipefail
arch=
if [ "${1:-}" = --arch ]; then arch=${2:?--arch needs an architecture}; shift 2; fi
name=${1:?usage: scripts/make-busybox-base.sh [--arch ARCH] NAME [TARBALL]}
keep=${2:-}
kiln=${KILN:-kiln}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "needs busybox-static ($busybox): apt-get install busybox-static" >&2; exit 1; }
work=$(mktemp -d /var/tmp/kiln-busybox.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,usr/bin,var}
platform=()
if [ -n "$arch" ] && [ "$arch" != "$(dpkg --print-architecture)" ]; then
  command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap: apt-get install mmdebstrap" >&2; exit 1; }
  mmdebstrap --quiet --variant=extract --architectures="$arch" --include=busybox-static \
    --format=directory bookworm "$work/extract" >&2
  cp "$work/extract/bin/busybox" "$root/bin/busybox"
  platform=(--platform "linux/$arch")
else
  cp "$busybox" "$root/bin/busybox"
  [ -n "$arch" ] && platform=(--platform "linux/$arch")
fi
# The applet list is the host busybox's: the same Debian release, the same applets.
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
"$kiln" import ${platform[@]+"${platform[@]}"} --change 'CMD ["sh"]' "$work/rootfs.tar" "$name" >/dev/null
if [ -n "$keep" ]; then
  mv "$work/rootfs.tar" "$keep"
fi
