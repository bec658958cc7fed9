"""Quantized-weight references from bitsandbytes (on the CPU) and torch, the independent
implementations ONN's NF4 / int8 / FP8 code is checked against (tests/kernels/quant_test.cpp,
tests/model/qlora_test.cpp).

Writes
  quant_reference.safetensors: for each case (a seeded random weight; one has a zero row, one an
      odd element count with a partial block, one more than 256 blocks so double quantization
      has a partial nested block):
        <case>.w (F32): the weight
        nf4.<case>.{packed, absmax, dequant}: bitsandbytes.functional.quantize_4bit(nf4, blocksize
            64, no double quantization) and dequantize_4bit in fp32
        nf4dq.<case>.{packed, absmax (U8), nested_absmax, nested_code, offset, dequant}: the same
            with compress_statistics=True
        int8.<case>.{q, scb, dequant}: int8_vectorwise_quant / int8_vectorwise_dequant
        fp8.<case>.q (U8, the E4M3 bits): (w / (row absmax / 448)).to(torch.float8_e4m3fn)
  models/llama_gqa_nf4/: models/llama_gqa loaded by transformers with BitsAndBytesConfig(4-bit
      nf4, double quantization, fp32 compute) and written back with save_pretrained: the layout
      of the "-bnb-4bit" folders users download (config.json quantization_config, *.weight U8,
      *.weight.absmax, *.weight.quant_map, *.weight.nested_absmax, *.weight.nested_quant_map,
      *.weight.quant_state.bitsandbytes__nf4)
  models/llama_gqa_nf4/qlora_reference.safetensors and qlora_reference/: one QLoRA step of PEFT
      on that model, as make_lora_reference.py writes for LoRA (ids, positions, labels, seq_lens,
      loss, logits, grad.<PEFT key>), plus base_loss: the mean loss of the quantized model
      without the adapter.
Run where torch, transformers, peft, bitsandbytes and safetensors are installed (CPU is fine):
  v/bin/python tests/data/make_quant_reference.py
"""
import json
import os
import shutil

import bitsandbytes.functional as bnbf
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

import bnb_default_kernels  # noqa: E402,F401  bitsandbytes' default kernels on the CPU (see there)

here = os.path.dirname(os.path.abspath(__file__))
models = os.path.join(here, "models")

g = torch.Generator().manual_seed(21)
cases = {
    "square": torch.randn(48, 64, generator=g) * 0.05,
    "odd": torch.randn(7, 37, generator=g),
    "many": torch.randn(130, 160, generator=g) * 0.02,
}
cases["square"][5].zero_()  # a zero block
cases["many"][3, 7] = 0.9  # an outlier

out = {}
for name, w in cases.items():
    out[f"{name}.w"] = w.contiguous()
    for tag, nested in (("nf4", False), ("nf4dq", True)):
        packed, st = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
        out[f"{tag}.{name}.packed"] = packed.reshape(-1).contiguous()
        out[f"{tag}.{name}.absmax"] = st.absmax.contiguous()
        if nested:
            out[f"{tag}.{name}.nested_absmax"] = st.state2.absmax.contiguous()
            out[f"{tag}.{name}.nested_code"] = st.state2.code.contiguous()
            out[f"{tag}.{name}.offset"] = st.offset.reshape(1).float()
        out[f"{tag}.{name}.dequant"] = bnbf.dequantize_4bit(packed, st).float().contiguous()
    q, scb, _ = bnbf.int8_vectorwise_quant(w.clone())
    out[f"int8.{name}.q"] = q.contiguous()
    out[f"int8.{name}.scb"] = scb.contiguous()
    out[f"int8.{name}.dequant"] = bnbf.int8_vectorwise_dequant(q, scb).float().contiguous()
    scale = (w.abs().amax(dim=1, keepdim=True) / 448.0).clamp(min=1e-38)
    out[f"fp8.{name}.q"] = (w / scale).to(torch.float8_e4m3fn).view(torch.uint8).contiguous()
save_file(out, os.path.join(here, "quant_reference.safetensors"))
print("quant_reference:", len(out), "tensors")

# A bitsandbytes 4-bit folder and one QLoRA step on it.
src, dst = os.path.join(models, "llama_gqa"), os.path.join(models, "llama_gqa_nf4")
bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(src, quantization_config=bnb, dtype=torch.float32, device_map="cpu",
                                             attn_implementation="eager")
model.save_pretrained(dst)
shutil.copy(os.path.join(src, "tokenizer.json"), dst)  # onn-train and onn-eval tokenize with it
for extra in ("generation_config.json",):
    if os.path.exists(os.path.join(dst, extra)):
        os.remove(os.path.join(dst, extra))

torch.manual_seed(1234)
peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"]))
gl = torch.Generator().manual_seed(99)
with torch.no_grad():
    for n, p in peft_model.named_parameters():
        if "lora_" in n:
            p.copy_(torch.randn(p.shape, generator=gl) * 0.1)
peft_model.peft_config["default"].base_model_name_or_path = "llama_gqa_nf4"
peft_model.save_pretrained(os.path.join(dst, "qlora_reference"))
os.remove(os.path.join(dst, "qlora_reference", "README.md"))

DOCS, T, PROMPT = 2, 12, 4
V = model.config.vocab_size
ids = torch.randint(0, V, (DOCS, T), generator=gl)
labels = torch.full((DOCS, T), -100, dtype=torch.long)
labels[:, PROMPT - 1:T - 1] = ids[:, PROMPT:]
# Training mode throughout: bitsandbytes' CPU inference path (no grad, eval) repacks the weights
# for AVX-512 kernels in place and refuses in_features that are not a multiple of the block.
peft_model.train()
with peft_model.disable_adapter():
    base_logits = peft_model(input_ids=ids).logits
    base_loss = F.cross_entropy(base_logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=-100)
logits = peft_model(input_ids=ids).logits
loss = F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=-100)
loss.backward()
ref = {
    "ids": ids.reshape(-1).to(torch.int32),
    "positions": torch.arange(T, dtype=torch.int32).repeat(DOCS),
    "labels": labels.reshape(-1).to(torch.int32),
    "seq_lens": torch.full((DOCS,), T, dtype=torch.int32),
    "loss": loss.detach().double().reshape(1),
    "base_loss": base_loss.detach().double().reshape(1),
    "logits": logits.detach().reshape(DOCS * T, V).contiguous(),
}
for n, p in peft_model.named_parameters():
    if "lora_" in n:
        ref["grad." + n.replace(".default", "")] = p.grad.detach().contiguous()
save_file(ref, os.path.join(dst, "qlora_reference.safetensors"))
with open(os.path.join(dst, "config.json")) as f:
    print("quantization_config:", json.dumps(json.load(f)["quantization_config"]))
print("llama_gqa_nf4 loss", loss.item(), "base_loss", base_loss.item())
