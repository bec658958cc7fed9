"""Writes tests/data/models/<name>/: small random Hugging Face models saved with
save_pretrained (config.json + model.safetensors, float32), a small byte-level BPE
tokenizer.json trained here with the `tokenizers` package (BOS added by its template), and
  reference.safetensors: fixed token ids, the logits transformers computes for them, and the
                         mean next-token loss (labels = ids, shifted inside the model);
  reference_eval.json:   the evaluation onn-eval must reproduce on tests/data/eval.txt and
                         eval.jsonl: each document tokenized with BOS, cut into windows of
                         16 tokens, next-token loss summed over every window, and its mean.
Run anywhere transformers is installed:
  v/bin/pip install torch transformers safetensors tokenizers && v/bin/python tests/data/make_model_fixtures.py
"""
import os

import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

data = os.path.dirname(os.path.abspath(__file__))
here = os.path.join(data, "models")
text = open(os.path.join(data, "eval.txt"), encoding="utf-8").read()
docs = [json.loads(l)["text"] for l in open(os.path.join(data, "eval.jsonl"), encoding="utf-8") if l.strip()]

tok = Tokenizer(tok_models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator([text] + docs, trainers.BpeTrainer(vocab_size=320, special_tokens=["<|bos|>", "<|eos|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
BOS, EOS = tok.token_to_id("<|bos|>"), tok.token_to_id("<|eos|>")
tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", BOS)])
SEQ = 16

small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=tok.get_vocab_size(), max_position_embeddings=128, rms_norm_eps=1e-5,
             bos_token_id=BOS, eos_token_id=EOS)
models = {
    "llama_gqa": (LlamaForCausalLM, LlamaConfig(**small, tie_word_embeddings=False,
                                                 rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                                  "factor": 8.0, "low_freq_factor": 1.0,
                                                                  "high_freq_factor": 4.0,
                                                                  "original_max_position_embeddings": 64})),
    "llama_tied": (LlamaForCausalLM, LlamaConfig(**dict(small, num_key_value_heads=4), tie_word_embeddings=True)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**small, tie_word_embeddings=True,
                                            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "phi3": (Phi3ForCausalLM, Phi3Config(**small, partial_rotary_factor=0.5, pad_token_id=0)),
}
torch.manual_seed(0)
ids = torch.randint(0, small["vocab_size"], (2, 9))


def evaluate(model, documents):
    total, count = 0.0, 0
    for d in documents:
        t = tok.encode(d).ids
        for s in range(0, len(t), SEQ):
            w = torch.tensor(t[s:s + SEQ])[None]
            if w.shape[1] < 2:
                continue
            with torch.no_grad():
                logits = model(input_ids=w).logits[0, :-1].double()
            total += float(F.cross_entropy(logits, w[0, 1:], reduction="sum"))
            count += w.shape[1] - 1
    return {"loss": total / count, "tokens": count}
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
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "reference_eval.json"), "w") as f:
        json.dump({"seq_len": SEQ, "eval.txt": evaluate(model, [text]), "eval.jsonl": evaluate(model, docs)}, f,
                  indent=1)
    keep = ("config.json", "model.safetensors", "reference.safetensors", "tokenizer.json", "reference_eval.json")
    for f in os.listdir(d):
        if f not in keep:
            os.remove(os.path.join(d, f))
    print(name, float(out.loss))
