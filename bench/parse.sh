#!/usr/bin/env bash
# Dockerfile parser throughput: the seed's Dockerfile and generated 10k/20k/40k-instruction
# files; prints MB/s and whether cost grows linearly. Pass --quick for a shorter run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p kiln-dockerfile --bench parse -- "$@"
