#!/usr/bin/env bash
# The CPU backend against transformers (+ PEFT) on the same machine, one run, same threads:
#   training steps (LoRA and full) at the tiny, small and smollm-135m presets, ONN in f32 and
#   with --cpu-matmul bf16 (LoRA: also --quantize bf16) where oneDNN has a bf16 matmul;
#   batch-1 decode and prefill at smollm-135m (135M-class) and tinyllama (1.1B-class);
#   the built-in demo's wall time.
# Prints one line per figure (ONN first, then the references) and writes them to OUT (default
# build/cpu-bench.txt). Needs a built tree (BUILD, default build/dev) and PY, a Python with
# torch, transformers and peft (default python3). Takes about 15 minutes on 2 cores.
#
#   PY=/tmp/v/bin/python scripts/cpu-bench.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/dev}
PY=${PY:-python3}
THREADS=${1:-$(nproc)}
OUT=${OUT:-build/cpu-bench.txt}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: > "$OUT"
say() { echo "$*" | tee -a "$OUT"; }

say "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads, $(git rev-parse --short HEAD)"
for preset in tiny small smollm-135m; do
  "$BUILD/tools/onn-init" --preset "$preset" --out "$TMP/$preset" --seed 1 --preset-vocab > /dev/null
  case $preset in tiny) shape="--seq-len 256 --micro-batch 4"; steps="--steps 10 --warmup 3" ;;
                  *) shape="--seq-len 256 --micro-batch 1"; steps="--steps 3 --warmup 1" ;; esac
  for mode in lora full; do
    flag=$([ "$mode" = full ] && echo --full || true)
    onn=$("$BUILD/tools/onn-bench" train --model "$TMP/$preset" --device cpu --threads "$THREADS" $shape $steps $flag --json |
          "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["ms_per_step"], 1))')
    # The bf16 GEMM (oneDNN), with the frozen LoRA base stored in bf16; skipped where it is missing.
    bf16_flags="--cpu-matmul bf16 $([ "$mode" = lora ] && echo --quantize bf16 || true)"
    if onn_bf16=$("$BUILD/tools/onn-bench" train --model "$TMP/$preset" --device cpu --threads "$THREADS" $shape $steps \
                  $flag $bf16_flags --json 2>/dev/null |
                  "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["ms_per_step"], 1))'); then
      onn="$onn ms  onn_bf16 $onn_bf16"
    fi
    ref=""
    for precision in bf16 fp32; do
      ms=$("$PY" bench/hf_train.py --model "$TMP/$preset" $shape $steps $flag --precision "$precision" --threads "$THREADS" |
           "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["ms_per_step"], 1))')
      ref="$ref  hf_$precision $ms ms"
    done
    say "train $preset $mode ($shape): onn $onn ms$ref"
  done
done

# Decode and prefill: onn_kernels_bench's generate cases (they write their own folders), then
# transformers' generate on the same shapes.
"$BUILD/bench/onn_kernels_bench" --benchmark_filter='generate_.*/cpu_f32/(smollm|tinyllama)' 2>/dev/null |
  grep generate_ | sed 's/  */ /g' | tee -a "$OUT"
for preset in smollm-135m tinyllama; do
  "$BUILD/tools/onn-init" --preset "$preset" --out "$TMP/w-$preset" --seed 1 --preset-vocab > /dev/null
  for dtype in float32 bfloat16; do
    say "hf_generate $preset $dtype: $("$PY" bench/hf_generate.py --model "$TMP/w-$preset" --device cpu --dtype "$dtype" \
        --threads "$THREADS" --prompt-tokens 128 --new-tokens 16)"
  done
  rm -rf "$TMP/w-$preset"
done
start=$(date +%s%N)
"$BUILD/tools/onn-train" --demo --threads "$THREADS" --out "$TMP/demo" > /dev/null
say "demo: $(( ($(date +%s%N) - start) / 1000000 )) ms"
