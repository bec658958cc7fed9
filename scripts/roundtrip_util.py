"""What scripts/peft_roundtrip.py and scripts/bnb_roundtrip.py share: running an ONN binary, and
the mean next-token loss of a transformers model over a text in fixed windows (as `onn-eval
--seq-len N` computes it)."""
import os
import subprocess
import sys

import torch
import torch.nn.functional as F


def onn_runner(bin_dir):
    """A function running bin_dir/TOOL with arguments, returning its stdout; exits on failure."""
    def onn(tool, *a):
        r = subprocess.run([os.path.join(bin_dir, tool), *a], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{tool} failed: {r.stderr}")
        return r.stdout
    return onn


def eval_loss(model, tok, text, seq):
    """Mean next-token loss over `text` cut into windows of `seq` tokens (windows of 1 skipped)."""
    total, count = 0.0, 0
    t = tok.encode(text).ids
    for s in range(0, len(t), seq):
        w = torch.tensor(t[s:s + seq])[None]
        if w.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(input_ids=w).logits[0, :-1].double()
        total += float(F.cross_entropy(logits, w[0, 1:], reduction="sum"))
        count += w.shape[1] - 1
    return total / count
