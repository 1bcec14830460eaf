#!/usr/bin/env bash
# Run `dualnet verify` on shared VNN-COMP benchmarks and compare the answers with the 2021 tools.
#
#   scripts/bench_verify.sh [-t SECONDS] [-b BRANCHING] [-o OUTDIR] [BENCHMARK...]
#
# BENCHMARK: mnistfc, acasxu, eran, verivital, marabou-cifar10 (default: all five), read from
# $DUALNET_SHARED/vnncomp (default ../shared/vnncomp). -t overrides the instances' own timeouts; -b is passed to
# `--branching` (default: verify's default, auto). Each benchmark writes OUTDIR/<benchmark>.csv and its result
# files; scripts/check_violated.py then prints the counts beside the 2021 tools' and fails on any `unsat` where
# the tools that agree found a counterexample.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout=""; branching=""; out="bench-out"
while getopts "t:b:o:" opt; do
  case $opt in
    t) timeout="--timeout $OPTARG" ;;
    b) branching="--branching $OPTARG" ;;
    o) out="$OPTARG" ;;
    *) echo "usage: $0 [-t SECONDS] [-b BRANCHING] [-o OUTDIR] [BENCHMARK...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
shared="${DUALNET_SHARED:-../shared}/vnncomp"
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(mnistfc acasxu eran verivital marabou-cifar10)
cargo build --release --quiet
mkdir -p "$out"
for b in "${benches[@]}"; do
  csv="$shared/$b/${b}_instances.csv"
  [ -f "$csv" ] || { echo "no $csv" >&2; exit 2; }
  echo "== $b"
  # shellcheck disable=SC2086
  ./target/release/dualnet verify --instances "$csv" $timeout $branching --out "$out/$b.csv" --out-dir "$out/$b"
  python3 scripts/check_violated.py "$shared/$b/results_2021.csv" "$out/$b.csv"
done
