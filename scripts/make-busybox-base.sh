#!/usr/bin/env bash
# Makes a tiny offline base image from busybox-static: /bin/busybox, its applets as symlinks,
# /etc/passwd and /etc/group. For the bench scripts' quick modes (no network, no cache).
# Usage: scripts/make-busybox-base.sh NAME [TARBALL]   imports it into kiln's store as NAME
#        (KILN=path/to/kiln, KILN_ROOT as usual); with TARBALL, the rootfs tar is also kept
#        there, for tools other than kiln.
set -euo pipefail
name=${1:?usage: scripts/make-busybox-base.sh NAME [TARBALL]}
keep=${2:-}
kiln=${KILN:-kiln}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "needs busybox-static ($busybox): apt-get install busybox-static" >&2; exit 1; }
work=$(mktemp -d /var/tmp/kiln-busybox.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,usr/bin,var}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
"$kiln" import --change 'CMD ["sh"]' "$work/rootfs.tar" "$name" >/dev/null
if [ -n "$keep" ]; then
  mv "$work/rootfs.tar" "$keep"
fi
