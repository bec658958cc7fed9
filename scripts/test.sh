#!/usr/bin/env bash
# Builds and runs every test, in two builds:
#   dev   the developer build (CUDA backend compiled for sm_90 when nvcc exists)
#   asan  a CPU-only build (ONN_CUDA=OFF) with AddressSanitizer and UBSan
# gpu-labelled tests run where a CUDA device exists and are reported skipped elsewhere.
# ONN_TEST_PRESETS="dev" limits the run to the named presets.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"
jobs=$(nproc)
for preset in ${ONN_TEST_PRESETS:-dev asan}; do
  echo "== preset $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
  # ctest shows only "Skipped"; say why.
  gpu_line=$("build/$preset/tests/gpu_tests" --test-case=__probe__ 2>&1 | head -n 1 || true)
  case "$gpu_line" in
    skipped:*) echo "gpu tests ($preset): $gpu_line" ;;
  esac
done
