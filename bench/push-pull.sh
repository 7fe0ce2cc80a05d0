#!/usr/bin/env bash
# kiln push/pull against skopeo copy, same image, same machine, same run.
#
#   bench/push-pull.sh [IMAGE]      (default: my-python-base from $KILN_ROOT or /var/lib/kiln;
#                                    falls back to the ~170 MB Debian minbase tarball if absent)
#
# Each tool pushes into its own fresh docker-registry on 127.0.0.1 (so neither finds blobs the
# other uploaded), from the same uncompressed layers: kiln from a fresh store loaded with the
# image (so its gzip cache is cold), skopeo from that store's OCI layout (oci:DIR:NAME), which it
# compresses on the way as it does for any uncompressed layer. Pulls: each tool pulls the image
# kiln pushed into an empty destination (kiln: a fresh store; skopeo: an empty OCI layout).
# Prints the best wall time of ROUNDS (default 3) and ratios; the issue's target is kiln push
# >= 1.5x faster than skopeo's.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (the kiln store and docker-registry)"; exit 1; }
for tool in docker-registry skopeo; do
  command -v "$tool" >/dev/null || { echo "needs $tool (scripts/test.sh installs it)"; exit 1; }
done

cargo build --release -q -p kiln
KILN="$PWD/target/release/kiln"
SRC_ROOT="${KILN_ROOT:-/var/lib/kiln}"
IMAGE="${1:-my-python-base}"
WORK="$(mktemp -d /var/tmp/kiln-bench-push-pull.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The image, loaded into a fresh bench store per round (layers uncompressed, as kiln builds
# them, and kiln's gzip cache cold).
if "$KILN" --root "$SRC_ROOT" inspect "$IMAGE" >/dev/null 2>&1; then
  "$KILN" --root "$SRC_ROOT" save -o "$WORK/image.tar" "$IMAGE"
  NAME="$IMAGE"
  load_image() { "$KILN" --root "$1" load -i "$WORK/image.tar" >/dev/null; }
else
  TAR=/var/cache/kiln-bases/debian-bookworm-minbase.tar
  [ -f "$TAR" ] || { echo "no $IMAGE in $SRC_ROOT and no $TAR: run scripts/build-python-base.sh"; exit 1; }
  echo "($IMAGE is not in $SRC_ROOT: using the Debian minbase tarball as a one-layer image)"
  NAME=bench-base
  load_image() { "$KILN" --root "$1" import "$TAR" bench-base >/dev/null; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # dir -> prints port
  local dir="$1" port
  port=$(free_port)
  mkdir -p "$dir"
  cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "$port"
}
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
min() { echo "if ($1 < $2) $1 else $2" | bc -l; }

# The machine may be shared: each tool runs ROUNDS times, alternating, into fresh registries
# and stores; the best time of each counts.
ROUNDS="${ROUNDS:-3}"
kiln_push=999999 kiln_push6=999999 skopeo_push=999999 kiln_repush=999999 kiln_pull=999999 skopeo_pull=999999
printf '[push]\ngzip_level = 6\n' > "$WORK/level6.toml"
for round in $(seq 1 "$ROUNDS"); do
  R="$WORK/round-$round"
  BENCH="$R/store"
  load_image "$BENCH"
  [ "$round" = 1 ] && echo "image: $NAME, $(( $(du -sb "$BENCH/oci/blobs" | cut -f1) / 1000000 )) MB of uncompressed blobs, $(nproc) cores, $ROUNDS rounds"
  KPORT=$(start_registry "$R/registry-kiln")
  SPORT=$(start_registry "$R/registry-skopeo")

  t=$(now)
  "$KILN" --root "$BENCH" --progress quiet push "$NAME" "127.0.0.1:$KPORT/bench/$NAME:1" >/dev/null
  kiln_push=$(min "$kiln_push" "$(elapsed "$t")")

  load_image "$R/store-level6"
  t=$(now)
  "$KILN" --root "$R/store-level6" --progress quiet push --config "$WORK/level6.toml" "$NAME" "127.0.0.1:$KPORT/level6/$NAME:1" >/dev/null
  kiln_push6=$(min "$kiln_push6" "$(elapsed "$t")")

  t=$(now)
  skopeo copy -q --dest-tls-verify=false "oci:$BENCH/oci:$NAME:latest" "docker://127.0.0.1:$SPORT/bench/$NAME:1"
  skopeo_push=$(min "$skopeo_push" "$(elapsed "$t")")

  t=$(now)
  "$KILN" --root "$BENCH" --progress quiet push "$NAME" "127.0.0.1:$KPORT/bench/$NAME:1" >/dev/null
  kiln_repush=$(min "$kiln_repush" "$(elapsed "$t")")

  t=$(now)
  "$KILN" --root "$R/pulled" --progress quiet pull "127.0.0.1:$KPORT/bench/$NAME:1" >/dev/null
  kiln_pull=$(min "$kiln_pull" "$(elapsed "$t")")

  mkdir -p "$R/skopeo-oci"
  t=$(now)
  skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$KPORT/bench/$NAME:1" "oci:$R/skopeo-oci:$NAME"
  skopeo_pull=$(min "$skopeo_pull" "$(elapsed "$t")")

  gz_bytes() { cat "$1"/registry/gzip/* | python3 -c 'import json,sys; print(sum(json.loads(l)["size"] for l in sys.stdin.read().replace("}{","}\n{").splitlines()))'; }
  if [ "$round" = 1 ]; then
    kiln_bytes=$(gz_bytes "$BENCH")
    kiln6_bytes=$(gz_bytes "$R/store-level6")
    skopeo_bytes=$(find "$R/registry-skopeo/data/docker/registry/v2/blobs" -name data -size +4k -printf '%s\n' | paste -sd+ | bc)
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  PIDS=()
  rm -rf "$R"
done

printf '\n%-28s %8s   (best of %s)\n' "operation" "seconds" "$ROUNDS"
printf '%-28s %8.2f\n' "kiln push (cold gzip)" "$kiln_push" "kiln push, gzip_level = 6" "$kiln_push6" "skopeo copy oci: -> docker:" "$skopeo_push" \
  "kiln push again (no-op)" "$kiln_repush" "kiln pull" "$kiln_pull" "skopeo copy docker: -> oci:" "$skopeo_pull"
printf '\npush: kiln is %.2fx skopeo (target >= 1.5x); with gzip_level = 6, %.2fx\n' "$(echo "$skopeo_push / $kiln_push" | bc -l)" "$(echo "$skopeo_push / $kiln_push6" | bc -l)"
echo "bytes pushed: kiln $kiln_bytes, kiln gzip_level = 6 $kiln6_bytes, skopeo $skopeo_bytes"
printf 'pull: kiln is %.2fx skopeo\n' "$(echo "$skopeo_pull / $kiln_pull" | bc -l)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
