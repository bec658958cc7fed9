#!/usr/bin/env bash
# The low-VRAM streaming figures on the GPU machine (build/gpu-carry.tar.xz from
# scripts/gpu-bundle.sh carried): the gpu tests, onn-bench train on the TinyLlama shape streamed
# under budgets from 2 GiB up, the Phi-4 shape (40 layers, 100k vocabulary, bf16) LoRA under a
# 4 GiB budget, and transformers + accelerate offload + PEFT on the same Phi-4 folder.
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
# Sections (default all but prof and phi4q): tests sanitizer tiny phi4 phi4q gen hf prof. TINY_RUNS and PHI4_RUNS: the runs (see below).
# Every streamed onn-bench run writes its timeline (onn-bench train --trace) to $out/trace-*.json
# unless TRACE=0; its summary (idle time waiting for the host, for a copy, other) is in the JSON,
# and scripts/trace_gaps.py lists the largest gaps.
sections=" ${*:-tests tiny phi4 gen hf} "
want() { [[ "$sections" == *" $1 "* ]]; }
trace() { [ "${TRACE:-1}" = 0 ] || echo "--trace $out/trace-$1.json"; }
want tests && T=150 step "$c/gpu_tests" > "$out/gpu-tests.txt" 2>&1
want sanitizer && {
  T=240 step compute-sanitizer --tool memcheck --error-exitcode 1 "$c/gpu_tests" "--test-case=*stream*,*Sliced*,*adamw*,*argmax*"
  T=120 step compute-sanitizer --tool racecheck --error-exitcode 1 "$c/gpu_tests" "--test-case=*Sliced*,*argmax*,*adamw*"
} > "$out/sanitizer.txt" 2>&1
want tiny && {
  "$c/onn-init" --preset tinyllama --out /tmp/tl --seed 1
  # TINY_RUNS: "budget:micro-batch" pairs (budget "off" = resident; micro-batch "rN": --batch-rows N,
  # the planner's split).
  for r in ${TINY_RUNS:-2GiB:r16 4GiB:r16 8GiB:r16 off:16}; do
    b=${r%%:*} mb=${r##*:}
    if [ "$b" = off ]; then set -- --stream off; else set -- --vram-budget "$b" --stream on; fi
    if [[ $mb == r* ]]; then set -- "$@" --batch-rows "${mb#r}"; else set -- "$@" --micro-batch "$mb"; fi
    [ "$b" = off ] || set -- "$@" $(trace "tinyllama-$b-$mb")
    T=120 step "$c/onn-bench" train --model /tmp/tl "$@" --seq-len 512 --steps 6 --warmup 1 --json
  done
} > "$out/stream-tinyllama.txt" 2>&1
want phi4 && {
  s0=$(date +%s); "$c/onn-init" --preset phi4 --preset-vocab --out /tmp/phi4 --seed 1; echo "onn-init: $(( $(date +%s) - s0 )) s"
  # PHI4_RUNS: "budget:micro-batch:grad-accum[:share]" (share: --share-loads on|off), or
  # "budget:rN" (--batch-rows N, the planner's split).
  # 3 GiB is near the smallest budget the 16-row run fits (2.64 GiB, LoRA state packed);
  # PHI4_RUNS="2701MiB:r16" runs that one (1 x 16 in 8 groups of 2 sharing each load).
  # 4 GiB: the planner's 8 x 2 sharing each weight load, against the same split loading per
  # micro-batch (4GiB:8:2:off). 12 GiB keeps 16 rows' layer inputs on the device: against 6 GiB
  # (offloaded) it isolates the activation copies.
  for r in ${PHI4_RUNS:-3GiB:r16 4GiB:r16 4GiB:8:2:off 6GiB:r16 12GiB:r16}; do
    IFS=: read -r b mb ga share <<< "$r"
    if [[ $mb == r* ]]; then set -- --batch-rows "${mb#r}"; else set -- --micro-batch "$mb" --grad-accum "$ga"; fi
    [ -n "${share:-}" ] && set -- "$@" --share-loads "$share"
    set -- "$@" $(trace "phi4-$b-$mb${ga:+x$ga}${share:+-$share}")
    T=240 step "$c/onn-bench" train --model /tmp/phi4 --vram-budget "$b" --seq-len 512 "$@" --steps 2 --warmup 1 --json
  done
} > "$out/stream-phi4.txt" 2>&1
want phi4q && {
  # Issue 21: the Phi-4 shape under 4 GiB with a bf16 base and an nf4 base (quantized while
  # loading, one tensor at a time on the CPU), side by side in one run.
  [ -f /tmp/phi4/config.json ] || "$c/onn-init" --preset phi4 --preset-vocab --out /tmp/phi4 --seed 1
  for q in none nf4; do
    T=420 step "$c/onn-bench" train --model /tmp/phi4 --vram-budget 4GiB --seq-len 512 --batch-rows 16 --quantize "$q" \
      --steps 2 --warmup 1 --json
  done
} > "$out/stream-phi4-quant.txt" 2>&1
want gen && {
  [ -d /tmp/tl ] || "$c/onn-init" --preset tinyllama --out /tmp/tl --seed 1
  for s in off on; do
    T=60 step "$c/onn-generate" --model /tmp/tl --prompt "the model learns from data" --temperature 0 \
      --max-new-tokens 32 --stream $s --json
  done
  [ -d /tmp/phi4 ] || "$c/onn-init" --preset phi4 --preset-vocab --out /tmp/phi4 --seed 1
  T=60 step "$c/onn-generate" --model /tmp/phi4 --plan --vram-budget 4GiB
  T=120 step "$c/onn-generate" --model /tmp/phi4 --vram-budget 4GiB --prompt "the model learns from data" \
    --temperature 0 --max-new-tokens 8 --json
  head -c 20000 README.md > /tmp/eval.txt
  T=120 step "$c/onn-eval" --model /tmp/phi4 --vram-budget 4GiB --data /tmp/eval.txt --seq-len 512 --json
} > "$out/stream-gen.txt" 2>&1
want prof && {  # an Nsight Systems trace of one Phi-4 step: where the device is idle, and why
  [ -d /tmp/phi4 ] || "$c/onn-init" --preset phi4 --preset-vocab --out /tmp/phi4 --seed 1
  nsys=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/*/bin/nsys 2>/dev/null | head -1)
  if [ -z "$nsys" ]; then echo "no nsys on this machine"; else
    for r in ${PROF_RUNS:-8GiB:16}; do
      b=${r%%:*} rows=${r##*:}
      rm -f /tmp/prof.*
      T=240 step "$nsys" profile -t cuda -s none --cpuctxsw=none -o /tmp/prof "$c/onn-bench" train --model /tmp/phi4 \
        --vram-budget "$b" --seq-len 512 --batch-rows "$rows" --steps 1 --warmup 1 --json
      T=120 step "$nsys" export --type sqlite -o /tmp/prof.sqlite /tmp/prof.nsys-rep
      T=120 step python3 scripts/nsys_gaps.py /tmp/prof.sqlite
    done
  fi
} > "$out/prof-phi4.txt" 2>&1
want hf && T=${HF_T:-200} step python3 bench/hf_offload_train.py --model /tmp/phi4 --budget-gib 4 --seq-len 512 --micro-batch 4 \
  --grad-accum 4 --steps 1 --warmup 0 > "$out/hf-offload-phi4.txt" 2>&1
tail -n 4 "$out"/*.txt
true
