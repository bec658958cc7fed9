// The transformer block, forward and backward (model/block.h).
#include "model/block.h"

#include "kernels/counter_rng.h"
#include "kernels/elementwise.h"
#include "kernels/linear.h"
#include "kernels/lora.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "runtime/error.h"

namespace onn {

Block::Block(Context& ctx, const LlamaModel& model, int64_t rows, const BlockInput& in, Tensor& weight_scratch)
    : ctx_(ctx), model_(model), c_(model.config()), n_(rows), in_(in), scale_(model.attention_scale()),
      scratch_(&weight_scratch) {
  ONN_ASSERT(in.positions && (in.seqs || in.attend));
}

Tensor Block::make(const Shape& s) const { return Tensor::empty(s, model_.dtype(), ctx_.allocator()); }

Tensor Block::stat(const Shape& s) const {
  return Tensor::empty(s, norm_stat_dtype(model_.dtype()), ctx_.allocator());
}

void Block::ensure(Tensor& t, const Shape& s, bool statistic) const {
  if (!t.defined() || !(t.shape() == s)) t = statistic ? stat(s) : make(s);
}

bool Block::adapted(size_t l, Projection p) const {
  return in_.lora && in_.lora->a[l][static_cast<size_t>(p)].defined();
}

LoraConfig Block::lora_config(size_t l, Projection p) const {
  LoraConfig cfg;
  cfg.scale = static_cast<float>(in_.lora->spec.scale());
  cfg.dropout = in_.dropout ? static_cast<float>(in_.lora->spec.dropout) : 0.0f;
  // A fused module (Phi-3 qkv_proj, gate_up_proj) applies one dropout mask to its input.
  using P = Projection;
  const P module = (c_.fused_qkv && p <= P::v) ? P::q : (c_.fused_gate_up && p == P::up) ? P::gate : p;
  cfg.seed = counter_hash(in_.dropout_seed, l * 8 + static_cast<uint64_t>(module));
  return cfg;
}

Tensor Block::weight(const LayerWeights& w, Projection p) const {
  const QuantTensor& q = w.*projection_quant(p);
  if (!q.defined()) return w.*projection_weight(p);
  // bf16 storage multiplied as it is stored (--cpu-matmul bf16).
  if (q.format == QuantFormat::bf16 && cpu_bf16_weights(ctx_.device(), model_.dtype(), DType::bf16))
    return q.data.slice(q.row0, q.row0 + q.rows);
  // One scratch for every projection of every layer and lane of the pass: the GEMM that reads it
  // is queued before the next dequantization writes it, on the same stream.
  if (!scratch_->defined()) *scratch_ = make(Shape{largest_projection(c_)});
  Tensor dense = scratch_->view(0, Shape{q.rows, q.cols}, model_.dtype());
  dequantize(ctx_, q, dense);
  return dense;
}

void Block::project(size_t l, Projection p, const Tensor& x, const LayerWeights& w, Tensor& y, BlockActs& a) const {
  Tensor LayerWeights::*bias_field = projection_bias(p);
  const Tensor* bias = bias_field && (w.*bias_field).defined() ? &(w.*bias_field) : nullptr;
  const QuantTensor& q = w.*projection_quant(p);
  // Decode on the CPU reads a quantized weight as it is stored (no dense scratch).
  if (!adapted(l, p) && q.defined() && quant_linear_direct(ctx_, n_) && model_.dtype() == DType::f32) {
    quant_linear(ctx_, x, q, bias, y);
    return;
  }
  const Tensor weight = this->weight(w, p);
  if (!adapted(l, p)) {
    linear_forward(ctx_, x, weight, bias, y);
    return;
  }
  const size_t t = static_cast<size_t>(p);
  ensure(a.xa[t], Shape{n_, in_.lora->spec.rank});
  lora_forward(ctx_, x, weight, bias, in_.lora->a[l][t], in_.lora->b[l][t], lora_config(l, p), y, a.xa[t]);
}

// The gradient of y = proj(x): dx written or accumulated (null: not needed), the weight's
// (full) or the adapter's (LoRA) gradients accumulated.
void Block::project_backward(size_t l, Projection p, const Tensor& x, const LayerWeights& w, const Tensor& dy,
                             Tensor* dx, bool acc_dx, const BlockActs& a, Gradients& g) const {
  const Tensor weight = this->weight(w, p);
  const size_t t = static_cast<size_t>(p);
  if (adapted(l, p) && !g.lora.modules.empty()) {
    LoraGrads lg;
    lg.dx = dx;
    lg.accumulate_dx = acc_dx;
    lg.da = &g.lora.a[l][t];
    lg.db = &g.lora.b[l][t];
    lg.accumulate_ab = true;
    lora_backward(ctx_, x, weight, in_.lora->a[l][t], in_.lora->b[l][t], a.xa[t], dy, lora_config(l, p), lg);
    return;
  }
  LayerWeights* G = g.full ? &g.full->layers[l] : nullptr;
  Tensor LayerWeights::*bias_field = projection_bias(p);
  LinearGrads lg;
  lg.dx = dx;
  lg.accumulate_dx = acc_dx;
  lg.dw = G && (G->*projection_weight(p)).defined() ? &(G->*projection_weight(p)) : nullptr;
  lg.accumulate_dw = true;
  lg.dbias = G && bias_field && (G->*bias_field).defined() ? &(G->*bias_field) : nullptr;
  linear_backward(ctx_, x, weight, dy, lg);
}

void Block::forward(size_t l, const LayerWeights& w, const Tensor& x, BlockActs& a, Tensor& out) const {
  const int64_t C = c_.hidden_size, F = c_.intermediate_size, H = c_.num_attention_heads,
                KVH = c_.num_key_value_heads, D = c_.head_dim;
  const float eps = static_cast<float>(c_.rms_norm_eps);
  using P = Projection;
  ensure(a.h1, Shape{n_, C});
  ensure(a.rstd1, Shape{n_}, true);
  rmsnorm_forward(ctx_, x, w.input_norm, eps, a.h1, a.rstd1);
  ensure(a.q, Shape{n_, H, D});
  ensure(a.k, Shape{n_, KVH, D});
  ensure(a.v, Shape{n_, KVH, D});
  Tensor q = a.q.reshape(Shape{n_, H * D}), k = a.k.reshape(Shape{n_, KVH * D}), v = a.v.reshape(Shape{n_, KVH * D});
  project(l, P::q, a.h1, w, q, a);
  project(l, P::k, a.h1, w, k, a);
  project(l, P::v, a.h1, w, v, a);
  rope_forward(ctx_, a.q, *in_.positions, model_.inv_freq());
  rope_forward(ctx_, a.k, *in_.positions, model_.inv_freq());
  ensure(a.att, Shape{n_, H, D});
  ensure(a.lse, Shape{n_, H}, true);
  if (in_.attend)
    (*in_.attend)(l, a.q, a.k, a.v, a.att, a.lse);
  else
    attention_forward(ctx_, a.q, a.k, a.v, *in_.seqs, scale_, a.att, a.lse);
  // The attention output becomes the residual in place: x2 = o + x, normalised in the same pass.
  ensure(a.x2, Shape{n_, C});
  project(l, P::o, a.att.reshape(Shape{n_, H * D}), w, a.x2, a);
  ensure(a.h2, Shape{n_, C});
  ensure(a.rstd2, Shape{n_}, true);
  add_rmsnorm_forward(ctx_, a.x2, x, w.post_attn_norm, eps, a.h2, a.rstd2);
  ensure(a.g, Shape{n_, F});
  ensure(a.u, Shape{n_, F});
  project(l, P::gate, a.h2, w, a.g, a);
  project(l, P::up, a.h2, w, a.u, a);
  ensure(a.s, Shape{n_, F});
  swiglu_forward(ctx_, a.g, a.u, a.s);
  project(l, P::down, a.s, w, out, a);
  add(ctx_, a.x2, out, out);
}

void Block::backward(size_t l, const LayerWeights& w, const Tensor& x, const BlockActs& a, Tensor& dx, bool need_dx,
                     Gradients& g) const {
  LayerWeights* G = g.full ? &g.full->layers[l] : nullptr;
  const auto norm_grad = [&](Tensor LayerWeights::*field) -> Tensor* {
    return G && (G->*field).defined() ? &(G->*field) : nullptr;
  };
  const int64_t C = c_.hidden_size, F = c_.intermediate_size, H = c_.num_attention_heads,
                KVH = c_.num_key_value_heads, D = c_.head_dim;
  using P = Projection;
  // MLP: out = x2 + down(swiglu(gate(h2), up(h2))).
  Tensor ds = make(Shape{n_, F}), dg = make(Shape{n_, F}), du = make(Shape{n_, F}), dh = make(Shape{n_, C});
  project_backward(l, P::down, a.s, w, dx, &ds, false, a, g);
  swiglu_backward(ctx_, a.g, a.u, ds, dg, du);
  project_backward(l, P::gate, a.h2, w, dg, &dh, false, a, g);
  project_backward(l, P::up, a.h2, w, du, &dh, true, a, g);
  norm_backward(a.x2, w.post_attn_norm, a.rstd2, dh, dx, norm_grad(&LayerWeights::post_attn_norm));
  // Attention: x2 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1))).
  Tensor datt = make(Shape{n_, H * D});
  project_backward(l, P::o, a.att.reshape(Shape{n_, H * D}), w, dx, &datt, false, a, g);
  Tensor dq = make(Shape{n_, H, D}), dk = make(Shape{n_, KVH, D}), dv = make(Shape{n_, KVH, D});
  attention_backward(ctx_, a.q, a.k, a.v, a.att, a.lse, datt.reshape(Shape{n_, H, D}), *in_.seqs, scale_, dq, dk,
                     dv);
  rope_backward(ctx_, dq, *in_.positions, model_.inv_freq());
  rope_backward(ctx_, dk, *in_.positions, model_.inv_freq());
  Tensor* dh1 = need_dx ? &dh : nullptr;
  project_backward(l, P::q, a.h1, w, dq.reshape(Shape{n_, H * D}), dh1, false, a, g);
  project_backward(l, P::k, a.h1, w, dk.reshape(Shape{n_, KVH * D}), dh1, true, a, g);
  project_backward(l, P::v, a.h1, w, dv.reshape(Shape{n_, KVH * D}), dh1, true, a, g);
  if (need_dx || G) norm_backward(x, w.input_norm, a.rstd1, dh, dx, norm_grad(&LayerWeights::input_norm));
}

void Block::norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                          Tensor* dweight) const {
  if (!dweight) {
    rmsnorm_backward(ctx_, x, w, rstd, dy, dx, nullptr, true);
    return;
  }
  // The kernel writes the weight's gradient; training accumulates it.
  Tensor tmp = stat(w.shape());
  rmsnorm_backward(ctx_, x, w, rstd, dy, dx, &tmp, true);
  if (tmp.dtype() == dweight->dtype()) {
    add(ctx_, *dweight, tmp, *dweight);
  } else {
    Tensor cast_tmp = Tensor::empty(tmp.shape(), dweight->dtype(), ctx_.allocator());
    cast(ctx_, tmp, cast_tmp);
    add(ctx_, *dweight, cast_tmp, *dweight);
  }
}

}  // namespace onn
