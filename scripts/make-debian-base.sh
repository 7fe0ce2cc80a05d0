#!/usr/bin/env bash
# Makes the Debian bookworm base that examples/python-base builds FROM, without any registry:
# mmdebstrap builds a minbase rootfs from the Debian archive and `kiln import` stores it.
# Usage: scripts/make-debian-base.sh [NAME] (default debian:bookworm). Needs root.
# Set KILN=path/to/kiln to use a given binary; KILN_ROOT picks the store as usual.
set -euo pipefail
name=${1:-debian:bookworm}
kiln=${KILN:-kiln}
cache=${KILN_BASE_CACHE:-/var/cache/kiln-bases}
mkdir -p "$cache"
tarball="$cache/debian-bookworm-minbase.tar"
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }
  # The same rootfs every time for a given archive state: no apt lists, fixed mtimes.
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} mmdebstrap --variant=minbase --quiet \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tarball.tmp" http://deb.debian.org/debian
  mv "$tarball.tmp" "$tarball"
fi
"$kiln" import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$name"
