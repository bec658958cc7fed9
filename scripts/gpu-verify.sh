#!/usr/bin/env bash
# The GPU checks, run on the GPU machine from the repository root with build/gpu-carry.tar.xz (from
# scripts/gpu-bundle.sh) carried: the gpu tests, compute-sanitizer memcheck over all of them
# and racecheck over the kernels with shared-memory tiles, the CUDA benchmarks and the PyTorch
# timings at the same shapes, and onn-bench train beside transformers + PEFT (train.txt).
# Results go to $OUT (or gpu-results/).
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
# Sections to run (default all): tests sanitizer bench torch train quant.
sections=" ${*:-tests sanitizer bench torch train quant} "
want() { [[ "$sections" == *" $1 "* ]]; }
want tests && {
  nvidia-smi
  step "$c/onn-info" --hardware
  step "$c/onn-info" --self-check
  step "$c/gpu_tests"
} > "$out/gpu-tests.txt" 2>&1
want sanitizer && {
  T=200 step compute-sanitizer --tool memcheck --error-exitcode 1 "$c/gpu_tests"
  T=120 step compute-sanitizer --tool racecheck --error-exitcode 1 "$c/gpu_tests" \
    "--test-case=*attention*,*rmsnorm*,*cross-entropy*,*embedding*,*argmax*,*adamw*"
} > "$out/sanitizer.txt" 2>&1
want bench && timeout 180 "$c/onn_kernels_bench" --benchmark_filter=cuda --benchmark_min_time=0.2 \
  --benchmark_out="$out/bench.json" --benchmark_out_format=json > "$out/bench.txt" 2>&1
want torch && {
  timeout 120 python3 bench/torch_reference.py --json "$out/torch.json"
  "$c/onn-init" --preset tinyllama --out /tmp/onn-tinyllama --seed 1 && python3 bench/hf_generate.py --model /tmp/onn-tinyllama
} > "$out/torch.txt" 2>&1
want train && {
  [ -d /tmp/onn-tinyllama ] || "$c/onn-init" --preset tinyllama --out /tmp/onn-tinyllama --seed 1
  # LoRA r16 and full training of the TinyLlama-1.1B shape, ONN then transformers (+ PEFT).
  for mode in "" "--full"; do
    T=90 step "$c/onn-bench" train --preset tinyllama --seq-len 1024 --micro-batch 4 $mode --json
    T=90 step python3 bench/hf_train.py --model /tmp/onn-tinyllama --seq-len 1024 --micro-batch 4 $mode
  done
} > "$out/train.txt" 2>&1
want quant && {
  # Quantized bases (issue 21): the CUDA dequantization and QLoRA tests under memcheck, the
  # dequantize / quantized-linear kernels beside the bf16 GEMM at the same shapes, and the
  # TinyLlama-shaped QLoRA step (nf4) beside bf16 LoRA and transformers + bitsandbytes + PEFT.
  T=200 step compute-sanitizer --tool memcheck --error-exitcode 1 "$c/gpu_tests" "--test-case=*dequantize*,*QLoRA*"
  timeout 240 "$c/onn_kernels_bench" --benchmark_min_time=0.2 \
    --benchmark_filter='quant_linear|dequantize|matmul/cuda_bf16/llama3_8b_(gate_up|down)_T4096'
  [ -f /tmp/onn-tinyllama/model.safetensors ] || "$c/onn-init" --preset tinyllama --out /tmp/onn-tinyllama --seed 1
  for q in none nf4 int8 fp8; do
    T=90 step "$c/onn-bench" train --model /tmp/onn-tinyllama --seq-len 1024 --micro-batch 4 --quantize "$q" --json
  done
  T=120 step python3 bench/hf_train.py --model /tmp/onn-tinyllama --seq-len 1024 --micro-batch 4 --qlora
} > "$out/quant.txt" 2>&1
tail -n 3 "$out"/*.txt
true
