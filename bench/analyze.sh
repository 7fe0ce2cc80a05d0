#!/usr/bin/env bash
# `kiln analyze` against `tar -tvf` over the same layer blobs of the seed's Python base image,
# in one run, with hyperfine. Both read every layer once, decompressing it and walking the tar
# headers; kiln also builds dive's model (per-path records, the stacked tree). Prints the
# ratio kiln / tar (target: within 1.5x).
#
#   bench/analyze.sh                 (as root; needs hyperfine, jq, tar, mmdebstrap)
#   KILN_ROOT=/var/lib/kiln IMAGE=my-python-base bench/analyze.sh   (an existing store/image)
#   bench/analyze.sh --quick         (or BENCH_QUICK=1) a three-layer busybox image in a fresh
#                                    store, two runs: checks the script works, times nothing
#
# Without IMAGE in the store, it makes the Debian base and builds examples/python-base first.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${BENCH_QUICK:-0}
[ "${1:-}" = --quick ] && quick=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in hyperfine jq tar; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install $tool)" >&2; exit 1; }
done
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  KILN=$PWD/target/release/kiln
fi
image=${IMAGE:-my-python-base}
work=$(mktemp -d /var/tmp/kiln-bench-analyze.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ "$quick" = 1 ]; then
  export KILN_ROOT=$work/store
  image=bench-analyze-quick
  KILN=$KILN scripts/make-busybox-base.sh busybox-bench
  mkdir -p "$work/ctx"
  printf '%s\n' 'FROM busybox-bench' \
    'RUN mkdir -p /data && for i in 1 2 3 4; do head -c 100000 /dev/urandom > /data/f$i; done' \
    'RUN rm /data/f1 && echo changed > /data/f2' >"$work/ctx/Dockerfile"
  "$KILN" build --no-lint --progress quiet -t "$image" "$work/ctx" >/dev/null
  RUNS=2
elif [ -z "${KILN_ROOT:-}" ]; then
  export KILN_ROOT=$work/store
fi
if ! "$KILN" inspect "$image" >/dev/null 2>&1; then
  KILN=$KILN scripts/make-debian-base.sh debian:bookworm >/dev/null
  "$KILN" build --no-lint --progress quiet -t "$image" examples/python-base >/dev/null
fi

# The layer blobs, straight from the store's OCI layout.
oci=$KILN_ROOT/oci
manifest=$(jq -r --arg name "$image" '
  .manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $name
    or .annotations["org.opencontainers.image.ref.name"] == ($name + ":latest")
    or .annotations["org.opencontainers.image.ref.name"] == ("docker.io/library/" + $name + ":latest"))
  | .digest' "$oci/index.json" | head -n1)
if [ -z "$manifest" ]; then
  # Fall back to kiln's own resolution: the manifest digest from `kiln images --format json`.
  manifest=$("$KILN" images --format json | jq -r --arg name "$image" \
    '.[] | select(.Repository == $name or .Repository + ":" + .Tag == $name) | .Digest' | head -n1)
fi
[ -n "$manifest" ] || { echo "no manifest for $image in $oci" >&2; exit 1; }
blobs=()
while read -r digest; do
  blobs+=("$oci/blobs/${digest/://}")
done < <(jq -r '.layers[].digest' "$oci/blobs/${manifest/://}")
bytes=$(du -cb "${blobs[@]}" | tail -n1 | cut -f1)
echo "image $image: ${#blobs[@]} layers, $bytes bytes of blobs"
"$KILN" analyze "$image" | sed -n '1,8p'

tar_cmd="for b in ${blobs[*]}; do tar -tvf \$b; done > /dev/null"
kiln_cmd="$KILN analyze --format json $image > /dev/null"
json=$work/hyperfine.json
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$json" \
  -n "tar -tvf (every layer blob)" "$tar_cmd" \
  -n "kiln analyze" "$kiln_cmd"
tar_mean=$(jq '.results[0].mean' "$json")
kiln_mean=$(jq '.results[1].mean' "$json")
ratio=$(jq -n "$kiln_mean / $tar_mean")
printf 'tar -tvf: %.3fs   kiln analyze: %.3fs   ratio kiln/tar: %.2fx (target <= 1.5x)\n' \
  "$tar_mean" "$kiln_mean" "$ratio"
