"""Writes tests/data/configs/*.json: config.json files exactly as transformers' save_pretrained
writes them for the architectures ONN loads (and two it refuses), with the fields that real
checkpoints set (Llama-3.1 rope scaling, Qwen2 biases, Phi-4-mini partial rotary, Mistral
sliding window). Run: v/bin/pip install transformers torch && v/bin/python tests/data/make_config_fixtures.py
"""
import os
import tempfile

from transformers import (GemmaConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config)

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
os.makedirs(here, exist_ok=True)

small = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=300, max_position_embeddings=256)
configs = {
    "llama3.json": LlamaConfig(**small, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=[2, 3],
                               tie_word_embeddings=True,
                               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 8192}),
    "llama_linear.json": LlamaConfig(**small, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0,
                                                               "factor": 2.0}),
    "mistral.json": MistralConfig(**small, sliding_window=128),
    "qwen2.json": Qwen2Config(**small, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                              tie_word_embeddings=True),
    "phi3.json": Phi3Config(**small, partial_rotary_factor=0.75, pad_token_id=0),
    "gemma_unsupported.json": GemmaConfig(**small),
}
for name, cfg in configs.items():
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        with open(os.path.join(d, "config.json")) as f, open(os.path.join(here, name), "w") as g:
            g.write(f.read())
    print("wrote", name)
