#!/usr/bin/env bash
# Builds kiln (release) and installs it as $PREFIX/bin/kiln (default /usr/local/bin/kiln, on
# root's PATH in every new shell), so the README's `kiln …` commands work as typed.
# Usage: scripts/install-kiln.sh   (as root for the default PREFIX)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
# ISA-L (gzip level 1, see crates/kiln-layer/src/isal.rs) is built from its bundled source with
# autotools and nasm; gcc and make build the other C the crates bundle.
missing=()
for p in gcc make nasm autoconf automake libtool; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "building kiln needs ${missing[*]}: apt-get install ${missing[*]}" >&2; exit 1; }
  echo "installing the build tools: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -p kiln
built=${CARGO_TARGET_DIR:-target}/release/kiln
mkdir -p "$prefix/bin"
# Copied beside its final name, then renamed over it: a kiln running meanwhile keeps its old
# binary, and an interrupted copy never sits at the final name.
tmp=$(mktemp "$prefix/bin/.kiln.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$built" "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$prefix/bin/kiln"
echo "installed $prefix/bin/kiln ($("$prefix/bin/kiln" --version))"
found=$(bash -lc 'command -v kiln' 2>/dev/null || true)
if [ "$found" != "$prefix/bin/kiln" ]; then
  echo "note: a new login shell finds kiln at '${found:-nowhere}', not $prefix/bin/kiln: put $prefix/bin first on PATH" >&2
fi
