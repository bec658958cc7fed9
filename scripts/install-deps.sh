#!/usr/bin/env bash
# Installs every build dependency of ONN from Debian packages (bookworm or later).
# The CUDA toolkit is optional and not installed here: with nvcc on PATH (or in
# /usr/local/cuda/bin) the build compiles the CUDA backend too.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  doctest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libopenblas-dev
  libpcre2-dev libutf8proc-dev   # tokenizer: split regexes with Unicode properties, NFC
  clang libclang-rt-dev   # the libFuzzer target (scripts/fuzz.sh)
  libopenmpi-dev openmpi-bin   # data-parallel runs (runtime/dist): mpirun -np N onn-train
  libsnappy-dev libzstd-dev zlib1g-dev   # Parquet data: the page codecs
  libdnnl-dev   # the CPU's bf16 GEMM (oneDNN): onn-train --cpu-matmul bf16
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
