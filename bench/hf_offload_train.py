"""The peer of `onn-bench train --vram-budget B` for models larger than the budget: Hugging Face
transformers + accelerate CPU offload (device_map with max_memory) + PEFT LoRA, on the GPU
machine, on the same model folder, batch, sequence length and LoRA rank. Gradient
checkpointing is on (without it the offloaded layers' weights stay alive on the GPU for the
backward). Whatever happens is reported: a time per step, or the error that stopped it.

  python3 bench/hf_offload_train.py --model DIR --budget-gib 4 --seq-len 512 --micro-batch 4 --grad-accum 4
Prints one JSON object.
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--budget-gib", type=float, default=4.0)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    out = {"bench": "hf_offload_train", "model": args.model, "budget_gib": args.budget_gib,
           "seq_len": args.seq_len, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum}
    try:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.bfloat16, device_map="auto",
            max_memory={0: f"{args.budget_gib}GiB", "cpu": "120GiB"}, attn_implementation="sdpa")
        out["load_s"] = time.time() - t0
        out["device_map_devices"] = sorted({str(v) for v in getattr(model, "hf_device_map", {}).values()})
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.0))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (args.micro_batch, args.seq_len), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            s = time.time()
            for _ in range(args.grad_accum):
                loss = model(input_ids=ids, labels=ids).loss / args.grad_accum
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if step >= args.warmup:
                times.append((time.time() - s) * 1e3)
        ms = statistics.median(times)
        out.update({"ms_per_step": ms, "ms_per_sample": ms / (args.micro_batch * args.grad_accum),
                    "peak_device_bytes": torch.cuda.max_memory_allocated(), "loss": float(loss) * args.grad_accum})
    except Exception as e:  # report what stopped it
        out["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
