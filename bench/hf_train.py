"""Hugging Face transformers (+ PEFT for LoRA) side of `onn-bench train`, on the GPU machine:
the same model shape (the config.json `onn-init --preset P` writes), batch, sequence length,
LoRA rank and targets, timed the same way (median of the timed steps after warm-up steps), so
the two give a ratio of tokens/s and of peak memory.

  LoRA: base weights bf16, adapters fp32 (PEFT's default) under bf16 autocast, AdamW (fused).
  Full: fp32 master weights under bf16 autocast, AdamW (fused): HF Trainer's bf16=True.
  QLoRA (--qlora): the folder's weights loaded by bitsandbytes in 4-bit nf4 with double
  quantization and bf16 compute (BitsAndBytesConfig, as QLoRA / unsloth / axolotl set it), PEFT
  LoRA on top; the folder must hold weights (onn-init without --config-only).
  Attention: SDPA. --recompute turns on gradient checkpointing.
  --precision fp32 (for the CPU, beside ONN's f32 CPU backend): every weight fp32, no autocast.
  --threads N: torch's intra-op threads (the CPU; ONN's --threads N beside it).

  onn-init --preset tinyllama --out /tmp/m --seed 1
  python3 bench/hf_train.py --model /tmp/m [--full] [--seq-len 512] [--micro-batch 4] [--lora-rank 16]
Prints one JSON object with the keys onn-bench train --json uses.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a folder with config.json (weights are not read)")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--recompute", action="store_true")
    ap.add_argument("--qlora", action="store_true", help="LoRA on a bitsandbytes 4-bit nf4 base")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="bf16: bf16 autocast (LoRA base weights bf16); fp32: fp32 throughout")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = AutoConfig.from_pretrained(args.model)
    torch.manual_seed(0)
    dtype = torch.float32 if args.full or args.precision == "fp32" else torch.bfloat16
    if args.qlora:
        from transformers import BitsAndBytesConfig
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=bnb, dtype=torch.bfloat16,
                                                     attn_implementation="sdpa", device_map=dev)
    else:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa").to(dev)
    if args.recompute:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if not args.full:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-5, fused=dev == "cuda")
    ids = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if dev == "cuda":
            torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(ms)
    print(json.dumps({
        "bench": "train", "impl": "transformers" + ("" if args.full else "+bitsandbytes+peft" if args.qlora else "+peft"),
        "mode": "full" if args.full else "qlora" if args.qlora else "lora", "precision": args.precision,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "parameters_trained": sum(p.numel() for p in trained),
        "seq_len": args.seq_len, "micro_batch": args.micro_batch, "recompute": args.recompute,
        "steps_timed": len(ms), "ms_per_step": med, "tokens_per_s": args.micro_batch * args.seq_len * 1000 / med,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None,
    }))


if __name__ == "__main__":
    main()
