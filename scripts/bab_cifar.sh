#!/usr/bin/env bash
# Branch and bound on CIFAR-10 nets trained with the paper's method: train the two CPU-budget recipes (a conv
# net with stride-2 convolutions, a residual net), then certify the first test images at ε = 2/255 with
# `--branching relu`, so that the examples the bound leaves open get branch and bound.
#
#   scripts/bab_cifar.sh [-n IMAGES] [-t SECONDS] [-o OUTDIR] [-d CIFAR_DIR] [MODEL...]
#
# MODEL: cifar_small, cifar_resnet_small (default: both), trained by specs/recipes/MODEL_bab_eps2.yaml into
# OUTDIR/MODEL (skipped when OUTDIR/MODEL/weights.safetensors exists). CIFAR_DIR: CIFAR-10 as the binary release
# or as JPEGs in class folders (default: $DUALNET_SHARED/data/cifar10-jpeg, DUALNET_SHARED defaulting to
# ../shared). -n: test images (default 100); -t: seconds of branch and bound per open example (default 60).
# Each model writes OUTDIR/MODEL/certify.json (per example: certified by the bound or by branching, broken by
# PGD or by the search, unknown) and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
n=100; t=60; out="bab-cifar-out"; data="${DUALNET_SHARED:-../shared}/data/cifar10-jpeg"
while getopts "n:t:o:d:" opt; do
  case $opt in
    n) n="$OPTARG" ;;
    t) t="$OPTARG" ;;
    o) out="$OPTARG" ;;
    d) data="$OPTARG" ;;
    *) echo "usage: $0 [-n IMAGES] [-t SECONDS] [-o OUTDIR] [-d CIFAR_DIR] [MODEL...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(cifar_small cifar_resnet_small)
cargo build --release --quiet
bin=target/release/dualnet
for m in "${models[@]}"; do
  recipe="specs/recipes/${m}_bab_eps2.yaml"
  [ -f "$recipe" ] || { echo "no recipe $recipe" >&2; exit 2; }
  if [ ! -f "$out/$m/weights.safetensors" ]; then
    "$bin" train --config "$recipe" --data-dir "$data" --out "$out/$m"
  fi
  "$bin" certify --spec "specs/$m.net" --weights "$out/$m/weights.safetensors" --data cifar10 --data-dir "$data" \
    --eps 0.00784313725490196 --mean 0.485,0.456,0.406 --std 0.225,0.225,0.225 --limit "$n" --attack \
    --branching relu --timeout "$t" --json "$out/$m/certify.json"
done
