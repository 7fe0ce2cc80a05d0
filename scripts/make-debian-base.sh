#!/usr/bin/env bash
# Makes the Debian bookworm base that examples/python-base builds FROM, without any registry:
# mmdebstrap builds a minbase rootfs from the Debian archive and `kiln import` stores it.
# Usage: scripts/make-debian-base.sh [--arch ARCH] [--suite SUITE] [--variant slim] [NAME]
# (default suite bookworm, NAME debian:SUITE, or debian:SUITE-slim with --variant slim). Needs
# root. --suite trixie makes Debian 13's base (examples/python-family builds on both releases).
# --variant slim leaves out what Debian's official slim images leave out (docs but their
# copyright files, man and info pages, locales, groff, lintian and linda data), and keeps the
# dpkg path excludes in /etc/dpkg/dpkg.cfg.d/ so that later apt installs leave them out too.
# --arch arm64 (any Debian architecture) makes that architecture's rootfs (mmdebstrap runs its
# maintainer scripts under qemu-user: scripts/enable-emulation.sh) and imports it with
# --platform linux/ARCH, into NAME's index when NAME exists for another platform.
# Set KILN=path/to/kiln to use a given binary; KILN_ROOT picks the store as usual.
# The rootfs tarball is cached in KILN_BASE_CACHE (default /var/cache/kiln-bases). A cached
# tarball is used only if it is the whole file this script wrote (its .sha256 matches) and
# reads as a tar to the end; anything else there (a directory, an empty or cut-off file) is
# replaced by a fresh one.
set -euo pipefail
arch=
variant=minbase
suite=bookworm
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch needs an architecture}; shift 2 ;;
    --suite) suite=${2:?--suite needs a Debian suite}; shift 2 ;;
    --variant)
      case ${2:-} in
        slim | minbase) variant=$2 ;;
        *) echo "make-debian-base: --variant ${2:-}: give slim or minbase" >&2; exit 2 ;;
      esac
      shift 2 ;;
    -*) echo "make-debian-base: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
default_name=debian:$suite
[ "$variant" = slim ] && default_name=debian:$suite-slim
name=${1:-$default_name}
kiln=${KILN:-kiln}
cache=${KILN_BASE_CACHE:-/var/cache/kiln-bases}
host_arch=$(dpkg --print-architecture)
# The host's tarball keeps its old name, so that existing caches stay valid.
suffix=${arch:+-$arch}
[ "$arch" = "$host_arch" ] && suffix=
tarball="$cache/debian-$suite-$variant$suffix.tar"
sum="$tarball.sha256"

# Whether $1 is a complete tarball: a regular file whose digest is the one recorded when it
# was made, and that tar reads to the end. The digest catches a file cut at a member
# boundary, which `tar -t` alone accepts.
usable() {
  [ -f "$1" ] && [ -s "$1" ] && [ -f "$sum" ] || return 1
  [ "$(sha256sum <"$1" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$sum")" ] || return 1
  tar -tf "$1" >/dev/null 2>&1
}

mkdir -p "$cache"
# One run at a time per cache: a second run waits, then finds the tarball the first one made.
exec 9>"$cache/.lock"
flock 9
if ! usable "$tarball"; then
  if [ -e "$tarball" ]; then
    echo "make-debian-base: $tarball is not a complete tarball; making it again" >&2
    rm -rf "$tarball" "$sum"
  fi
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }
  # Temp files from runs that were killed outright (no trap ran) are left over; a run still
  # going has a younger one.
  find "$cache" -maxdepth 1 -name ".debian-$suite-$variant*" -mmin +120 -exec rm -rf {} + 2>/dev/null || true
  # Same directory as the tarball, so the final rename is atomic; removed on any failure.
  tmp=$(mktemp "$cache/.debian-$suite-$variant$suffix.XXXXXX")
  trap 'rm -f "$tmp" "$tmp.sha256"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # --format=tar: mmdebstrap otherwise picks the format from the file name, and a name that
  # is not *.tar makes it write a directory.
  # The same rootfs every time for a given archive state: no apt lists, fixed mtimes.
  slim=()
  if [ "$variant" = slim ]; then
    # The path list of Debian's slim images (debuerreotype's slimify). mmdebstrap writes the
    # --dpkgopt lines to /etc/dpkg/dpkg.cfg.d/99mmdebstrap and leaves that file in the image,
    # so packages installed FROM it later skip the same paths. The hook removes whatever the
    # essential packages unpacked there before dpkg had the file.
    for p in doc groff info linda lintian/overrides locale man; do
      slim+=(--dpkgopt="path-exclude=/usr/share/$p/*")
    done
    slim+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
    # Merged /usr made by symlinks, as Debian's images have it: without the hook, bookworm's
    # init-system-helpers pulls in the usrmerge package and with it all of perl (about 45 MB).
    slim+=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
    slim+=(--customize-hook='cd "$1"/usr/share &&
      for p in groff info linda lintian/overrides locale man; do
        [ -d "$p" ] && find "$p" -mindepth 1 -delete; done;
      find doc -mindepth 1 ! -type d ! -path "doc/*/copyright" -delete;
      find doc -mindepth 1 -type d -empty -delete')
  fi
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} mmdebstrap --variant=minbase --quiet \
    --format=tar ${arch:+--architectures="$arch"} \
    ${slim[@]+"${slim[@]}"} \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$suite" "$tmp" http://deb.debian.org/debian
  tar -tf "$tmp" >/dev/null || { echo "mmdebstrap did not write a readable tar to $tmp" >&2; exit 1; }
  sha256sum <"$tmp" >"$tmp.sha256"
  chmod 644 "$tmp"
  mv -f "$tmp" "$tarball"
  mv -f "$tmp.sha256" "$sum"
fi
platform=()
[ -n "$arch" ] && platform=(--platform "linux/$arch")
"$kiln" import ${platform[@]+"${platform[@]}"} --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$name"
