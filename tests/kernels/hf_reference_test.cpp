// The CPU kernels (F64) against values PyTorch and Hugging Face transformers computed
// (tests/data/kernel_reference.safetensors, written by make_kernel_reference.py): RMSNorm,
// RoPE frequencies (default, linear, llama3) and rotation (full and partial), packed causal
// GQA attention with gradients (SDPA + autograd), SwiGLU, cross-entropy, AdamW.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"

using namespace onn;
using namespace onn::test;

namespace {

struct Reference {
  SafetensorsFile file = SafetensorsFile::open(std::string(ONN_TEST_DATA_DIR) + "/kernel_reference.safetensors");
  Tensor operator[](const std::string& name) const { return clone(file.tensor(name)); }
};

}  // namespace

TEST_CASE("HF reference: RMSNorm (transformers computes in fp32)") {
  Context ctx(Device::cpu());
  const Reference ref;
  const Tensor x = ref["rmsnorm_x"], w = ref["rmsnorm_w"];
  Tensor y = Tensor::empty(x.shape(), DType::f64), r = Tensor::empty(Shape{x.dim(0)}, DType::f64);
  rmsnorm_forward(ctx, x, w, 1e-5f, y, r);
  CHECK(rel_error(y, ref["rmsnorm_y"]) < 1e-6);
}

TEST_CASE("HF reference: RoPE inverse frequencies, default / linear / llama3") {
  const Reference ref;
  RopeConfig cfg;
  cfg.head_dim = 128;
  cfg.theta = 500000;
  const auto check = [&](const char* name) {
    const std::vector<double> f = rope_inv_freq(cfg);
    Tensor t = Tensor::empty(Shape{static_cast<int64_t>(f.size())}, DType::f64);
    std::memcpy(t.data(), f.data(), f.size() * 8);
    CAPTURE(name);
    CHECK(rel_error(t, ref[std::string("rope_inv_freq_") + name]) < 1e-6);  // transformers: fp32
  };
  check("default");
  cfg.scaling = {RopeScaling::Type::linear, 4.0, 1.0, 4.0, 8192};
  check("linear");
  cfg.scaling = {RopeScaling::Type::llama3, 8.0, 1.0, 4.0, 8192};
  check("llama3");
}

TEST_CASE("HF reference: RoPE rotation with restarting positions, full and partial rotary") {
  Context ctx(Device::cpu());
  const Reference ref;
  const Tensor pos = ref["rope_positions"];
  for (const char* name : {"full", "partial"}) {
    CAPTURE(name);
    RopeConfig cfg;
    cfg.head_dim = 16;
    cfg.partial_rotary_factor = std::string(name) == "full" ? 1.0 : 0.5;
    const Tensor inv = rope_inv_freq_tensor(ctx, cfg, DType::f64);
    Tensor q = ref[std::string("rope_") + name + "_q"];
    rope_forward(ctx, q, pos, inv);
    CHECK(rel_error(q, ref[std::string("rope_") + name + "_q_out"]) < 1e-12);
  }
}

TEST_CASE("HF reference: packed causal GQA attention and its gradients (SDPA + autograd)") {
  Context ctx(Device::cpu());
  const Reference ref;
  const Tensor lens = ref["attn_lens"];
  std::vector<int64_t> l;
  for (int64_t i = 0; i < lens.numel(); ++i) l.push_back(lens.data_as<int32_t>()[i]);
  const AttentionSeqs seqs = packed_seqs(ctx, l);
  const Tensor q = ref["attn_q"], k = ref["attn_k"], v = ref["attn_v"], g = ref["attn_dout"];
  Tensor o = Tensor::empty(q.shape(), DType::f64), lse = Tensor::empty(Shape{q.dim(0), q.dim(1)}, DType::f64);
  attention_forward(ctx, q, k, v, seqs, 0.3f, o, lse);
  CHECK(rel_error(o, ref["attn_out"]) < 1e-7);  // the scale passes through float
  Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = Tensor::empty(k.shape(), DType::f64),
         dv = Tensor::empty(v.shape(), DType::f64);
  attention_backward(ctx, q, k, v, o, lse, g, seqs, 0.3f, dq, dk, dv);
  CHECK(rel_error(dq, ref["attn_dq"]) < 1e-7);
  CHECK(rel_error(dk, ref["attn_dk"]) < 1e-7);
  CHECK(rel_error(dv, ref["attn_dv"]) < 1e-7);
}

TEST_CASE("HF reference: SwiGLU and cross-entropy with gradients") {
  Context ctx(Device::cpu());
  const Reference ref;
  const Tensor gate = ref["swiglu_gate"], up = ref["swiglu_up"], dout = ref["swiglu_dout"];
  Tensor o = Tensor::empty(gate.shape(), DType::f64), dg = Tensor::empty(gate.shape(), DType::f64),
         du = Tensor::empty(gate.shape(), DType::f64);
  swiglu_forward(ctx, gate, up, o);
  swiglu_backward(ctx, gate, up, dout, dg, du);
  CHECK(rel_error(o, ref["swiglu_out"]) < 1e-12);
  CHECK(rel_error(dg, ref["swiglu_dgate"]) < 1e-12);
  CHECK(rel_error(du, ref["swiglu_dup"]) < 1e-12);
  Tensor logits = ref["ce_logits"];
  const Tensor labels = ref["ce_labels"];
  Tensor valid = Tensor::empty(Shape{1}, DType::f64), tl = Tensor::empty(Shape{labels.numel()}, DType::f64),
         loss = Tensor::empty(Shape{1}, DType::f64);
  count_valid_labels(ctx, labels, kIgnoreIndex, valid);
  cross_entropy_forward_backward(ctx, logits, labels, valid, tl);
  mean_loss(ctx, tl, valid, loss);
  CHECK(rel_error(loss, ref["ce_loss"]) < 1e-12);
  CHECK(rel_error(logits, ref["ce_dlogits"]) < 1e-12);
}

TEST_CASE("HF reference: three steps of torch.optim.AdamW") {
  Context ctx(Device::cpu());
  const Reference ref;
  Tensor p = ref["adamw_p0"];
  const Tensor grads = ref["adamw_grads"];
  Tensor m = Tensor::zeros(p.shape(), DType::f64), v = Tensor::zeros(p.shape(), DType::f64);
  AdamWConfig cfg;
  cfg.lr = 0.01;
  cfg.beta1 = 0.8;
  cfg.beta2 = 0.95;
  cfg.eps = 1e-6;
  cfg.weight_decay = 0.1;
  for (int64_t s = 0; s < 3; ++s) {
    cfg.step = s + 1;
    adamw_step(ctx, p, grads.slice(s, s + 1).reshape(p.shape()), m, v, cfg);
  }
  CHECK(rel_error(p, ref["adamw_p"]) < 1e-12);
  CHECK(rel_error(m, ref["adamw_m"]) < 1e-12);
  CHECK(rel_error(v, ref["adamw_v"]) < 1e-12);
}
