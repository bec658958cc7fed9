"""ONN's quantized folders and QLoRA adapters in transformers + bitsandbytes + PEFT.

On tests/data/models/llama_gqa (and phi3: fused qkv_proj / gate_up_proj):
  1. `onn-quantize --format nf4` writes a folder that AutoModelForCausalLM.from_pretrained loads
     with bitsandbytes (Linear4bit modules); its logits equal those of transformers' own
     BitsAndBytesConfig(load_in_4bit, nf4, double quantization) load of the unquantized folder;
  2. `onn-eval` on that folder gives transformers' mean next-token loss (16-token windows of
     tests/data/eval.txt);
  3. an adapter `onn-train` trains on it (QLoRA) loads with PeftModel.from_pretrained on the
     transformers + bitsandbytes model, and its loss equals `onn-eval --adapter`;
  4. the folder `onn-merge` writes from it (dense, no quantization_config) loads in transformers
     and gives `onn-eval --adapter`'s loss.
Prints one JSON line per model and exits 1 if any check fails. Runs on the CPU (bitsandbytes'
CPU backend with its default kernels where the native ones depart from the format,
tests/data/bnb_default_kernels.py; training mode throughout, as make_quant_reference.py says).
  v/bin/python scripts/bnb_roundtrip.py --bin build/dev/tools [--work /tmp/bnb-roundtrip]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from peft import PeftModel
from tokenizers import Tokenizer
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # roundtrip_util
from roundtrip_util import eval_loss, onn_runner  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = os.path.join(root, "tests", "data")
sys.path.insert(0, data)
import bnb_default_kernels  # noqa: E402,F401  bitsandbytes' default kernels on the CPU (see there)
ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True, help="the folder holding onn-quantize, onn-train, onn-eval, onn-merge")
ap.add_argument("--work", default="/tmp/bnb-roundtrip")
args = ap.parse_args()
onn = onn_runner(args.bin)
shutil.rmtree(args.work, ignore_errors=True)
os.makedirs(args.work)
SEQ = 16
text = open(os.path.join(data, "eval.txt"), encoding="utf-8").read()
BNB = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.float32)




def load(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu", **kw)
    return m.train()  # bitsandbytes' CPU inference path repacks weights; dropout is 0 in these models




def onn_loss(model_dir, *extra):
    return json.loads(onn("onn-eval", "--model", model_dir, "--data", os.path.join(data, "eval.txt"), "--seq-len",
                          str(SEQ), "--device", "cpu", "--json", *extra))["loss"]


ok = True
for name in ("llama_gqa", "phi3"):
    mdir = os.path.join(data, "models", name)
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    qdir = os.path.join(args.work, name + "-nf4")
    onn("onn-quantize", "--model", mdir, "--out", qdir)
    ours, theirs = load(qdir), load(mdir, quantization_config=BNB)
    kinds = sorted({type(m).__name__ for m in ours.modules() if "Linear" in type(m).__name__})
    probe = torch.randint(0, ours.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = ours(input_ids=probe).logits, theirs(input_ids=probe).logits
    folder_err = float((a - b).norm() / b.norm())
    hf_loss, onn_base = eval_loss(ours, tok, text, SEQ), onn_loss(qdir)

    train = os.path.join(args.work, name + ".jsonl")
    with open(train, "w") as f:
        for i in range(8):
            f.write(json.dumps({"input": f"The number {i}", "output": f" is {3 * i}"}) + "\n")
    run = os.path.join(args.work, name + "-run")
    onn("onn-train", "--model", qdir, "--data", train, "--out", run, "--steps", "4", "--lr", "2e-2", "--lora-rank", "4",
        "--lora-targets", "all-linear", "--device", "cpu", "--json")
    adapter = os.path.join(run, "adapter")
    peft = PeftModel.from_pretrained(load(qdir), adapter)
    peft.train()
    hf_adapted, onn_adapted = eval_loss(peft, tok, text, SEQ), onn_loss(qdir, "--adapter", adapter)

    merged = os.path.join(args.work, name + "-merged")
    onn("onn-merge", "--model", qdir, "--adapter", adapter, "--out", merged)
    hf_merged = eval_loss(load(merged).eval(), tok, text, SEQ)

    result = {"model": name, "linear_modules": kinds, "folder_logits_rel_err_vs_transformers_bnb": folder_err,
              "transformers_loss": hf_loss, "onn_eval_loss": onn_base, "peft_qlora_loss": hf_adapted,
              "onn_eval_adapter_loss": onn_adapted, "merged_transformers_loss": hf_merged}
    print(json.dumps(result))
    ok &= (kinds == ["Linear", "Linear4bit"] and folder_err < 1e-5 and abs(hf_loss - onn_base) / hf_loss < 1e-5 and
           abs(hf_adapted - onn_adapted) / hf_adapted < 1e-5 and abs(onn_adapted - onn_base) > 1e-3 and
           abs(hf_merged - onn_adapted) / onn_adapted < 1e-5)
sys.exit(0 if ok else 1)
