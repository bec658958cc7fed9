"""Writes tests/data/kernel_reference.safetensors: inputs and outputs of the LLaMA-family ops
computed by PyTorch and Hugging Face transformers (float64 where they allow it), so ONN's CPU
kernels are checked against an implementation they did not come from.

Run (any machine, CPU is enough):
  python3 -m venv v && v/bin/pip install torch transformers safetensors numpy
  v/bin/python tests/data/make_kernel_reference.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rope
from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb as phi3_rope

torch.manual_seed(0)
D = torch.float64
out = {}


def rnd(*shape, scale=1.0):
    return (torch.rand(*shape, dtype=D) * 2 - 1) * scale


# RMSNorm (transformers computes the statistics in float32).
x, w = rnd(5, 48), rnd(48)
norm = LlamaRMSNorm(48, eps=1e-5).to(D)
with torch.no_grad():
    norm.weight.copy_(w)
out.update(rmsnorm_x=x, rmsnorm_w=w, rmsnorm_y=norm(x))

# RoPE frequencies: default, linear and llama3 scaling, as transformers computes them.
for name, scaling in [("default", None),
                      ("linear", {"rope_type": "linear", "factor": 4.0}),
                      ("llama3", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})]:
    params = {"rope_type": "default", "rope_theta": 500000.0} if scaling is None else dict(scaling, rope_theta=500000.0)
    cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, head_dim=128, max_position_embeddings=131072,
                      rope_parameters=params)
    fn = ROPE_INIT_FUNCTIONS.get(params["rope_type"])
    if fn is None:  # default: 1 / theta^(2i/d)
        inv = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.int64).float() / 128))
    else:
        inv, _ = fn(cfg, "cpu")
    out[f"rope_inv_freq_{name}"] = inv.to(D)

# RoPE application (HF rotate_half) with positions restarting per document; full and partial.
pos = torch.tensor([0, 1, 2, 3, 0, 1, 7, 100000], dtype=torch.int64)
for name, d, r, fn in [("full", 16, 16, llama_rope), ("partial", 16, 8, phi3_rope)]:
    inv = 1.0 / (10000.0 ** (torch.arange(0, r, 2, dtype=D) / r))
    freqs = pos.to(D)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None], emb.sin()[None]          # (1, T, R)
    q = rnd(1, 3, len(pos), d)                            # (B, H, T, D)
    k = rnd(1, 1, len(pos), d)
    q2, k2 = fn(q, k, cos, sin)
    out[f"rope_{name}_q"] = q[0].transpose(0, 1).contiguous()   # (T, H, D), ONN's layout
    out[f"rope_{name}_q_out"] = q2[0].transpose(0, 1).contiguous()
out["rope_positions"] = pos.to(torch.int32)

# Causal GQA attention over two packed documents: SDPA per document, gradients by autograd.
H, KVH, Dh, lens = 4, 2, 8, [5, 3]
N = sum(lens)
q, k, v = rnd(N, H, Dh).requires_grad_(), rnd(N, KVH, Dh).requires_grad_(), rnd(N, KVH, Dh).requires_grad_()
dout = rnd(N, H, Dh)
outs, start = [], 0
for L in lens:
    qs, ks, vs = (t[start:start + L].transpose(0, 1)[None] for t in (q, k, v))   # (1, heads, L, D)
    ks, vs = ks.repeat_interleave(H // KVH, dim=1), vs.repeat_interleave(H // KVH, dim=1)
    outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=0.3)[0].transpose(0, 1))
    start += L
o = torch.cat(outs)
o.backward(dout)
out.update(attn_q=q.detach(), attn_k=k.detach(), attn_v=v.detach(), attn_dout=dout, attn_out=o.detach(),
           attn_dq=q.grad, attn_dk=k.grad, attn_dv=v.grad, attn_lens=torch.tensor(lens, dtype=torch.int32))

# SwiGLU as LlamaMLP computes it (act_fn(gate) * up), with gradients.
g, u = rnd(4, 10, scale=3.0).requires_grad_(), rnd(4, 10).requires_grad_()
do = rnd(4, 10)
y = F.silu(g) * u
y.backward(do)
out.update(swiglu_gate=g.detach(), swiglu_up=u.detach(), swiglu_dout=do, swiglu_out=y.detach(),
           swiglu_dgate=g.grad, swiglu_dup=u.grad)

# Cross-entropy, mean over non-ignored tokens, with the logits gradient.
logits = rnd(6, 11, scale=4.0).requires_grad_()
labels = torch.tensor([3, -100, 0, 10, -100, 5])
loss = F.cross_entropy(logits, labels, ignore_index=-100)
loss.backward()
out.update(ce_logits=logits.detach(), ce_labels=labels.to(torch.int32), ce_loss=loss.detach().reshape(1),
           ce_dlogits=logits.grad)

# AdamW: three steps of torch.optim.AdamW with weight decay.
p0 = rnd(20)
p = torch.nn.Parameter(p0.clone())
opt = torch.optim.AdamW([p], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
grads = rnd(3, 20)
for i in range(3):
    p.grad = grads[i].clone()
    opt.step()
st = opt.state[p]
out.update(adamw_p0=p0, adamw_grads=grads, adamw_p=p.detach().clone(), adamw_m=st["exp_avg"], adamw_v=st["exp_avg_sq"])

here = os.path.dirname(os.path.abspath(__file__))
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(here, "kernel_reference.safetensors"),
          metadata={"producer": f"torch {torch.__version__}"})
print("wrote", len(out), "tensors")
