"""Hugging Face transformers' side of the generation benchmark, on the GPU machine: batch-1
greedy `generate` of the same model folder onn_kernels_bench's generate benchmarks use
(write it with `onn-init --preset tinyllama --out DIR --seed 1`), prefill of a 512-token prompt
and decode of 128 tokens, bf16, timed with CUDA events after a warm-up, so the two can be given
as a ratio.

  python3 bench/hf_generate.py --model DIR [--prompt-tokens 512] [--new-tokens 128]
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    ids = (torch.arange(args.prompt_tokens) * 7919 % (vocab - 2))[None].cuda()

    def timed(fn):
        fn()
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
           "transformers": __import__("transformers").__version__, "device": torch.cuda.get_device_name(0)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
