#!/usr/bin/env bash
# Builds kiln (release) and installs it as $PREFIX/bin/kiln (default /usr/local/bin/kiln, on
# root's PATH in every new shell), so the README's `kiln …` commands work as typed.
# Usage: scripts/install-kiln.sh   (as root for the default PREFIX)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
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
