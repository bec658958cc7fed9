"""One LoRA training step in Hugging Face transformers + PEFT, as the reference ONN's LoRA
forward/backward is checked against (tests/model/peft_parity_test.cpp).

For each random model folder under tests/data/models (make_model_fixtures.py) that it lists,
this script wraps the model with a PEFT LoRA config, sets A and B to seeded random values
(B non-zero, so every gradient is informative), and writes
  models/<name>/lora_reference/  the adapter exactly as PEFT's save_pretrained writes it
                                 (adapter_config.json + adapter_model.safetensors)
  models/<name>/lora_reference.safetensors:
      ids, positions, labels (I32, packed: two documents back to back, labels already the next
      token with -100 at each document's end and on its first, "prompt", tokens), seq_lens,
      loss (F64 [1]): the mean cross-entropy over the valid labels, fp32,
      logits (F32 [N, V]) of the adapted model,
      grad.<PEFT key> (F32): d loss / d lora_A and lora_B of every module.
Run where torch, transformers, peft and safetensors are installed (CPU is fine):
  v/bin/python tests/data/make_lora_reference.py
"""
import os

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
cases = {
    # name: LoRA settings (a layer subset and rsLoRA on some, dropout 0 so the step is exact)
    "llama_gqa": dict(r=4, lora_alpha=8, target_modules=LLAMA),
    "qwen2": dict(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1],
                  use_rslora=True),
    "phi3": dict(r=4, lora_alpha=16, target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
}
DOCS, T, PROMPT = 2, 12, 4

for name, lora in cases.items():
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(here, name), dtype=torch.float32,
                                                 attn_implementation="eager")
    peft_model = get_peft_model(model, LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **lora))
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft_model.peft_config["default"].base_model_name_or_path = name
    peft_model.save_pretrained(os.path.join(here, name, "lora_reference"))
    os.remove(os.path.join(here, name, "lora_reference", "README.md"))  # PEFT's model-card template

    V = model.config.vocab_size
    ids = torch.randint(0, V, (DOCS, T), generator=g)
    labels = torch.full((DOCS, T), -100, dtype=torch.long)
    labels[:, PROMPT - 1:T - 1] = ids[:, PROMPT:]  # next token, answer part only
    logits = peft_model(input_ids=ids).logits  # (DOCS, T, V): documents separately = packed with restarts
    loss = F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=-100)
    loss.backward()

    out = {
        "ids": ids.reshape(-1).to(torch.int32),
        "positions": torch.arange(T, dtype=torch.int32).repeat(DOCS),
        "labels": labels.reshape(-1).to(torch.int32),
        "seq_lens": torch.full((DOCS,), T, dtype=torch.int32),
        "loss": loss.detach().double().reshape(1),
        "logits": logits.detach().reshape(DOCS * T, V).contiguous(),
    }
    for n, p in peft_model.named_parameters():
        if "lora_" in n:
            out["grad." + n.replace(".default", "")] = p.grad.detach().contiguous()
    save_file(out, os.path.join(here, name, "lora_reference.safetensors"))
    print(name, "loss", loss.item(), "lora tensors", sum("lora_" in n for n, _ in peft_model.named_parameters()))
