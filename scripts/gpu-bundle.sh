#!/usr/bin/env bash
# Prepares the GPU checks for the lent GPU machine (which has the CUDA 13 toolkit, PyTorch and
# compute-sanitizer but none of the Debian packages): builds the dev preset here, then puts
# stripped gpu_tests / onn_kernels_bench / onn-info / onn-init / onn-bench / onn-train / onn-generate / onn-eval and the non-system shared libraries they
# load (OpenBLAS, Google Benchmark, ...) in build/gpu-carry, packed as build/gpu-carry.tar.xz for the
# device tool's 64 MiB carry limit. On the GPU machine, with build/gpu-carry.tar.xz carried:
#   scripts/gpu-verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"
cmake --preset dev >/dev/null
cmake --build --preset dev --target gpu_tests onn_kernels_bench onn-info onn-init onn-bench onn-train onn-generate onn-eval
out=build/gpu-carry
rm -rf "$out"
mkdir -p "$out/lib"
bins="build/dev/tests/gpu_tests build/dev/bench/onn_kernels_bench build/dev/tools/onn-info build/dev/tools/onn-init
      build/dev/tools/onn-bench build/dev/tools/onn-train build/dev/tools/onn-generate build/dev/tools/onn-eval"
for b in $bins; do strip -o "$out/$(basename "$b")" "$b"; done
# Every resolved library except the C/C++ runtime (present on any Linux) and CUDA's own
# (the GPU machine's toolkit provides the matching ones).
ldd $bins | awk '/=> \//{print $1" "$3}' | sort -u | while read -r name path; do
  case "$name" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libstdc++.so*|libgcc_s.so*|ld-linux*) ;;
    libcuda*|libcublas*|libcudart*|libnv*) ;;
    *) cp -L "$path" "$out/lib/$name" ;;
  esac
done
# OpenBLAS alone is ~36 MB: the folder is packed so that it and the working tree stay under the
# device tool's 64 MiB; gpu-verify.sh unpacks it.
tar -C build -cJf build/gpu-carry.tar.xz gpu-carry
du -sh "$out" build/gpu-carry.tar.xz
