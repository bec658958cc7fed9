#!/usr/bin/env bash
# Builds the libFuzzer target for the safetensors reader (clang, ASan + UBSan) and runs it
# for a fixed time (default 300 s) from the crafted seed corpus. Crashes land in
# build/fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)" --target safetensors_fuzz write_corpus
corpus=build/fuzz/corpus
mkdir -p "$corpus" build/fuzz/artifacts
build/fuzz/tests/fuzz/write_corpus "$corpus"
build/fuzz/tests/fuzz/safetensors_fuzz "$corpus" -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix=build/fuzz/artifacts/ -print_final_stats=1
