"""Writes tests/data/models/<name>/: small random Hugging Face models saved with
save_pretrained (config.json + model.safetensors, float32) and reference.safetensors with
fixed token ids, the logits transformers computes for them, and the mean next-token loss
(labels = ids, shifted inside the model as transformers does). ONN's forward is checked
against these. Run anywhere transformers is installed:
  v/bin/pip install torch transformers safetensors && v/bin/python tests/data/make_model_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=211, max_position_embeddings=128, rms_norm_eps=1e-5)
models = {
    "llama_gqa": (LlamaForCausalLM, LlamaConfig(**small, tie_word_embeddings=False,
                                                 rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                                  "factor": 8.0, "low_freq_factor": 1.0,
                                                                  "high_freq_factor": 4.0,
                                                                  "original_max_position_embeddings": 64})),
    "llama_tied": (LlamaForCausalLM, LlamaConfig(**dict(small, num_key_value_heads=4), tie_word_embeddings=True)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**small, tie_word_embeddings=True,
                                            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "phi3": (Phi3ForCausalLM, Phi3Config(**small, partial_rotary_factor=0.5, pad_token_id=0, eos_token_id=2)),
}
torch.manual_seed(0)
ids = torch.randint(0, small["vocab_size"], (2, 9))
for name, (cls, cfg) in models.items():
    model = cls(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init, so errors would show
            p.normal_(0.0, 0.08)
    d = os.path.join(here, name)
    model.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": out.logits.contiguous(),
               "loss": out.loss.reshape(1)}, os.path.join(d, "reference.safetensors"),
              metadata={"producer": f"transformers {__import__('transformers').__version__}"})
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "reference.safetensors"):
            os.remove(os.path.join(d, f))
    print(name, float(out.loss))
