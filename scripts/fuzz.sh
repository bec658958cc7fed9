#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a fixed time (default 300 s)
# from its seed corpus: safetensors_fuzz (the safetensors reader), quant_fuzz (weights in
# bitsandbytes' 4-bit layout: parts, quant_state JSON, dequantization) and parquet_fuzz (the
# Parquet footer, seeded with the pyarrow-written fixtures). Crashes land in
# build/fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS] [TARGET...] (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=${*:-safetensors_fuzz quant_fuzz parquet_fuzz}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)" --target $targets write_corpus
mkdir -p build/fuzz/artifacts
for t in $targets; do
  corpus=build/fuzz/corpus-$t
  mkdir -p "$corpus"
  case "$t" in
    quant_fuzz) build/fuzz/tests/fuzz/write_corpus "$corpus" quant ;;
    parquet_fuzz) cp tests/data/parquet/*.parquet "$corpus"/ ;;
    *) build/fuzz/tests/fuzz/write_corpus "$corpus" ;;
  esac
  build/fuzz/tests/fuzz/$t "$corpus" -max_total_time="$seconds" -max_len=8192 \
    -artifact_prefix=build/fuzz/artifacts/$t- -print_final_stats=1
done
