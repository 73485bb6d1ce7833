#!/usr/bin/env bash
# Runs every benchmark once, one after another (they share the machine's cores; never run them in parallel).
# Results go to stdout; the tables in docs/benchmarks.md were made by these commands (see each section there).
# Usage: bash bench/run_all.sh [--quick]            (the GPU checks: bench/gpu.sh, on a machine with a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R3FA=${R3FA:-.venv/bin/r3fa}
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296}
quick=${1:-}
sources=100; every=5
if [ -n "$quick" ]; then sources=20; every=20; fi

echo "## $(date -u +%FT%TZ) on $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name --format=csv,noheader; else echo "no GPU"; fi

echo "### models";     $PY bench/bench_models.py ${quick:+--quick}
echo "### training";   $PY bench/bench_train.py
shards=$(mktemp -d)/shards; trap 'rm -rf "$(dirname "$shards")"' EXIT
$R3FA shards build configs/mix/demo.yaml --out "$shards" --workers 0 -f json >/dev/null
echo "### loaders";    $PY bench/bench_loaders.py "$shards"
echo "### decode";     $PY bench/decode_agreement.py "$shards"
echo "### profiling";  $PY bench/bench_profiling.py --sources $sources
echo "### build";      $PY bench/bench_build.py
echo "### agreement";  $PY bench/profiling_agreement.py --every $every
