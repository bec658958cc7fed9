#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a fixed time (default 300 s)
# from its crafted seed corpus: safetensors_fuzz (the safetensors reader) and quant_fuzz (weights
# in bitsandbytes' 4-bit layout: parts, quant_state JSON, dequantization). Crashes land in
# build/fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS] [TARGET...] (default: both targets)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=${*:-safetensors_fuzz quant_fuzz}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)" --target $targets write_corpus
mkdir -p build/fuzz/artifacts
for t in $targets; do
  corpus=build/fuzz/corpus-$t
  mkdir -p "$corpus"
  if [ "$t" = quant_fuzz ]; then build/fuzz/tests/fuzz/write_corpus "$corpus" quant; else build/fuzz/tests/fuzz/write_corpus "$corpus"; fi
  build/fuzz/tests/fuzz/$t "$corpus" -max_total_time="$seconds" -max_len=8192 \
    -artifact_prefix=build/fuzz/artifacts/$t- -print_final_stats=1
done
