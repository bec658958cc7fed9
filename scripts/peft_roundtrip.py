"""ONN's adapters and merged models in Hugging Face transformers + PEFT.

For each random model folder of tests/data/models it trains a LoRA adapter with onn-train
(a few steps at a high learning rate, so B is far from zero), then in Python:
  1. PeftModel.from_pretrained(base, <run>/adapter) loads it; the mean next-token loss over
     tests/data/eval.txt in 16-token windows equals `onn-eval --adapter` (same logits);
  2. greedy generation from the same prompt gives the same tokens as `onn-generate --adapter`;
  3. the folder `onn-merge` writes loads with AutoModelForCausalLM.from_pretrained and gives
     the logits of PEFT's merge_and_unload() of the same adapter.
Prints one JSON line per model and exits 1 if any check fails.
  v/bin/python scripts/peft_roundtrip.py --bin build/dev/tools [--work /tmp/peft-roundtrip]
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
from transformers import AutoModelForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = os.path.join(root, "tests", "data")
ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True, help="the folder holding onn-train, onn-eval, onn-generate, onn-merge")
ap.add_argument("--work", default="/tmp/peft-roundtrip")
args = ap.parse_args()
onn = onn_runner(args.bin)
shutil.rmtree(args.work, ignore_errors=True)
os.makedirs(args.work)
cases = {"llama_gqa": ["--lora-targets", "all-linear"],
         "qwen2": ["--lora-targets", "q,v,down", "--train-layers", "1", "--rslora"],
         "phi3": ["--lora-targets", "all-linear", "--lora-dropout", "0.1"]}
SEQ = 16
text = open(os.path.join(data, "eval.txt"), encoding="utf-8").read()






ok = True
for name, flags in cases.items():
    mdir = os.path.join(data, "models", name)
    train = os.path.join(args.work, name + ".jsonl")
    with open(train, "w") as f:
        for i in range(8):
            f.write(json.dumps({"input": f"The number {i}", "output": f" is {3 * i}"}) + "\n")
    run = os.path.join(args.work, name + "-run")
    onn("onn-train", "--model", mdir, "--data", train, "--out", run, "--steps", "4", "--lr", "2e-2", "--lora-rank", "4",
        "--device", "cpu", "--json", *flags)
    adapter = os.path.join(run, "adapter")
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))

    base = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, adapter).eval()
    hf_loss = eval_loss(peft, tok, text, SEQ)
    onn_loss = json.loads(onn("onn-eval", "--model", mdir, "--adapter", adapter, "--data",
                              os.path.join(data, "eval.txt"), "--seq-len", str(SEQ), "--device", "cpu", "--json"))["loss"]
    base_loss = json.loads(onn("onn-eval", "--model", mdir, "--data", os.path.join(data, "eval.txt"), "--seq-len",
                               str(SEQ), "--device", "cpu", "--json"))["loss"]

    prompt = "The number 3"
    ids = torch.tensor([tok.encode(prompt).ids])
    with torch.no_grad():
        # An explicit mask: Phi-3's pad id is the fixture's BOS id, which generate would mask out.
        hf_gen = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                               do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
    eos = base.config.eos_token_id
    hf_gen = [t for t in hf_gen if t != eos]  # onn-generate stops before the end token
    onn_text = onn("onn-generate", "--model", mdir, "--adapter", adapter, "--prompt", prompt, "--temperature", "0",
                   "--max-new-tokens", "12", "--device", "cpu", "--json")
    onn_gen = "".join(json.loads(l)["text"] for l in onn_text.splitlines() if json.loads(l)["type"] == "token")
    hf_text = tok.decode(hf_gen, skip_special_tokens=False)

    merged = os.path.join(args.work, name + "-merged")
    onn("onn-merge", "--model", mdir, "--adapter", adapter, "--out", merged, "--max-shard-size", "40KB")
    hf_merged = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    peft_merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32),
                                            adapter).merge_and_unload().eval()
    probe = torch.randint(0, base.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = hf_merged(input_ids=probe).logits, peft_merged(input_ids=probe).logits
        # PeftModel.from_pretrained changed `base` in place: the plain model again.
        c = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32)(input_ids=probe).logits
    merged_err = float((a - b).norm() / b.norm())
    merged_vs_base = float((a - c).norm() / c.norm())

    loss_err = abs(hf_loss - onn_loss) / hf_loss
    result = {"model": name, "peft_eval_loss": hf_loss, "onn_eval_loss_adapter": onn_loss, "onn_eval_loss_base": base_loss,
              "loss_rel_err": loss_err, "greedy_equal": hf_text == onn_gen, "greedy_onn": onn_gen, "greedy_hf": hf_text,
              "merged_logits_rel_err": merged_err, "merged_vs_base_rel": merged_vs_base, "merged_files": sorted(os.listdir(merged))}
    print(json.dumps(result))
    ok &= loss_err < 1e-5 and hf_text == onn_gen and merged_err < 1e-5 and merged_vs_base > 1e-4 and abs(base_loss - onn_loss) > 1e-3
sys.exit(0 if ok else 1)
