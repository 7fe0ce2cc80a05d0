#!/usr/bin/env bash
# Copies the conformance Dockerfiles and shell words into fuzz/corpus/ (gitignored) as seeds.
# Usage: fuzz/seed-corpus.sh [CONFORMANCE_DIR]   (default: ../shared/conformance/buildkit)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
conf="${1:-$here/../../shared/conformance/buildkit}"
[ -d "$conf" ] || { echo "conformance directory not found: $conf" >&2; exit 1; }
mkdir -p "$here/corpus/parse" "$here/corpus/shell_word"
n=0
for f in "$conf"/parser/*/*/Dockerfile "$conf"/parser/testfile-line/Dockerfile; do
  [ -f "$f" ] || continue
  cp "$f" "$here/corpus/parse/$(echo "$f" | sed 's|.*/parser/||; s|/|_|g')"
  n=$((n+1))
done
# Each envVarTest/wordsTest input becomes one shell_word seed (first byte: lexer options).
i=0
while IFS='|' read -r a b c; do
  case "$a" in \#*|'') continue;; esac
  word="$b"; [ -n "$c" ] || word="$a"
  word="$(echo "$word" | sed 's/^ *//; s/ *$//')"
  printf '\000%s' "$word" > "$here/corpus/shell_word/env_$i"; i=$((i+1))
done < <(cat "$conf/shell/envVarTest" "$conf/shell/wordsTest")
echo "seeded $n Dockerfiles and $i words into $here/corpus"
