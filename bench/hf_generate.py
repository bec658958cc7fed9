"""Hugging Face transformers' side of the generation benchmark: batch-1 greedy `generate` of the
same model folder onn_kernels_bench's generate benchmarks use (write it with `onn-init --preset
P --out DIR --seed 1 --preset-vocab`), prefill of a prompt and decode of new tokens, timed after a
warm-up (CUDA events on the GPU, wall time on the CPU), so the two can be given as a ratio.

  python3 bench/hf_generate.py --model DIR [--prompt-tokens 512] [--new-tokens 128]
  python3 bench/hf_generate.py --model DIR --device cpu --dtype float32 --threads 2 --prompt-tokens 128
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = args.device
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    vocab = model.config.vocab_size
    ids = (torch.arange(args.prompt_tokens) * 7919 % (vocab - 2))[None].to(dev)

    def timed(fn):
        fn()
        if dev == "cpu":
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1000.0

    with torch.no_grad():
        prefill = timed(lambda: model(input_ids=ids))
        total = timed(lambda: model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                             do_sample=False, eos_token_id=None, pad_token_id=0))
    decode = max(total - prefill, 1e-9)
    out = {"prefill_tok_per_s": args.prompt_tokens / prefill, "decode_tok_per_s": args.new_tokens / decode,
           "transformers": __import__("transformers").__version__, "dtype": args.dtype,
           "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "threads": torch.get_num_threads()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
