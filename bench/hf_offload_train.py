"""The peer of `onn-bench train --vram-budget B` for models larger than the budget: Hugging Face
transformers + accelerate CPU offload (a device_map under max_memory) + PEFT LoRA, on the GPU
machine, on the same model folder, batch, sequence length and LoRA rank. Whatever happens is
reported: a time per step, or the error that stopped it.

`from_pretrained(device_map="auto")` followed by `get_peft_model` does not train: PEFT creates
the LoRA weights of offloaded layers on the meta device, and the first backward fails
("expected device meta but got cuda:0"). So the adapter is added on the CPU first, the device
map comes from accelerate's `infer_auto_device_map` under `max_memory`, every module placed on
the CPU is split so that its LoRA A/B weights (trainable, small) live on the GPU while its
frozen weights stay offloaded, and `dispatch_model` installs the hooks that copy the offloaded
weights to the GPU for each forward (and for the recomputing forward of gradient
checkpointing, which is on: without it the activations of every layer stay on the GPU).

  python3 bench/hf_offload_train.py --model DIR --budget-gib 4 --seq-len 512 --micro-batch 4 --grad-accum 4
Prints one JSON object.
"""
import argparse
import json
import statistics
import time

import torch


def split_offloaded(model, device_map):
    """Every module mapped to "cpu": its LoRA leaves to GPU 0, its other leaves to "cpu"."""
    out = {}
    modules = dict(model.named_modules())
    for name, dev in device_map.items():
        if dev != "cpu":
            out[name] = dev
            continue
        root = modules[name] if name else model
        for sub, m in root.named_modules():
            if any(True for _ in m.children()):
                continue
            if not any(True for _ in m.parameters(recurse=False)) and not any(True for _ in m.buffers(recurse=False)):
                continue
            full = f"{name}.{sub}" if name and sub else (name or sub)
            out[full] = 0 if ".lora_" in f".{full}" else "cpu"
    return out


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
    stage = "import"
    try:
        import accelerate
        import peft
        import transformers
        from accelerate import dispatch_model, infer_auto_device_map
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                           "accelerate": accelerate.__version__, "peft": peft.__version__}
        stage = "load"
        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.0))
        out["load_s"] = time.time() - t0
        stage = "dispatch"
        no_split = list(getattr(model.base_model.model, "_no_split_modules", None) or [])
        dmap = infer_auto_device_map(model, max_memory={0: f"{args.budget_gib}GiB", "cpu": "120GiB"},
                                     no_split_module_classes=no_split, dtype=torch.bfloat16)
        out["layers_on_gpu"] = sum(1 for k, v in dmap.items() if ".layers." in k and v == 0)
        out["layers_offloaded"] = sum(1 for k, v in dmap.items() if ".layers." in k and v == "cpu")
        dmap = split_offloaded(model, dmap)
        model = dispatch_model(model, device_map=dmap, main_device=0)
        params = [p for p in model.parameters() if p.requires_grad]
        out["trainable_on_gpu"] = all(p.device.type == "cuda" for p in params)
        out["parameters_trained"] = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=1e-5)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (args.micro_batch, args.seq_len), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        stage = "train"
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
        out["error"] = f"{stage}: {type(e).__name__}: {str(e)[:400]}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
