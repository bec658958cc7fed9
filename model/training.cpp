// The training forward/backward of the LLaMA-family block stack, LoRA or full weights.
#include "model/training.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>

#include "kernels/counter_rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/lora.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/streaming.h"
#include "runtime/error.h"

namespace onn {

Gradients make_gradients(Context& ctx, const LlamaModel& model, const LoraAdapter* adapter) {
  Gradients g;
  if (adapter) {
    g.lora.spec = adapter->spec;
    std::vector<std::pair<Shape, DType>> specs;  // packed like the adapter's masters
    for (const LoraModule& m : adapter->modules)
      for (const Tensor* t : {&m.a, &m.b}) specs.emplace_back(t->shape(), t->dtype());
    const std::vector<Tensor> t = Tensor::empty_packed(specs, ctx.allocator());
    for (size_t i = 0; i < adapter->modules.size(); ++i) {
      LoraModule d;
      d.layer = adapter->modules[i].layer;
      d.name = adapter->modules[i].name;
      d.a = d.a_c = t[2 * i];
      d.b = d.b_c = t[2 * i + 1];
      g.lora.modules.push_back(std::move(d));
    }
    g.lora.bind(model.config());
  } else {
    g.full = weights_like(ctx, model.config(), model.weights(), lora_master_dtype(model.dtype()));
  }
  zero_gradients(ctx, g);
  return g;
}

std::vector<Tensor> gradient_tensors(const Gradients& g) {
  std::vector<Tensor> out;
  for (const LoraModule& m : g.lora.modules) {
    out.push_back(m.a);
    out.push_back(m.b);
  }
  if (g.full) {
    // named_weights lists each tensor once (fused whole, a tied head once).
    ModelConfig cfg;
    cfg.tie_word_embeddings = g.full->lm_head.data() == g.full->embed.data();
    for (const auto& [name, t] : named_weights(cfg, *g.full)) out.push_back(t);
  }
  return out;
}

void zero_gradients(Context& ctx, Gradients& g) {
  for (Tensor& t : gradient_tensors(g)) t.fill_bytes(0, &ctx.compute());
}

namespace {

constexpr int kQ = 0, kK = 1, kV = 2, kO = 3, kGate = 4, kUp = 5, kDown = 6;

// One layer's forward internals, kept for its backward.
struct LayerActs {
  Tensor h1, rstd1;            // (N, C), (N): input norm
  Tensor q, k, v;              // (N, H, D), (N, KVH, D), (N, KVH, D); q and k after RoPE
  Tensor att, lse;             // (N, H, D), (N, H)
  Tensor x2;                   // (N, C): the residual after attention
  Tensor h2, rstd2;            // (N, C), (N): post-attention norm
  Tensor g, u, s;              // (N, F): gate, up, silu(gate) * up
  std::array<Tensor, kLoraTargets> xa;  // (N, R) per adapted target
};

class Pass {
 public:
  Pass(Context& ctx, const LlamaModel& model, const PassOptions& opt, int64_t n)
      : ctx_(ctx),
        model_(model),
        c_(model.config()),
        opt_(opt),
        n_(n),
        inv_freq_(model.inv_freq()),
        scale_(model.attention_scale()) {}

  Tensor make(const Shape& s) const { return Tensor::empty(s, model_.dtype(), ctx_.allocator()); }
  Tensor stat(const Shape& s) const { return Tensor::empty(s, norm_stat_dtype(model_.dtype()), ctx_.allocator()); }

  bool adapted(size_t l, int t) const {
    return opt_.lora && opt_.lora->a[l][static_cast<size_t>(t)].defined();
  }

  LoraConfig lora_config(size_t l, int t) const {
    LoraConfig cfg;
    cfg.scale = static_cast<float>(opt_.lora->spec.scale());
    cfg.dropout = opt_.dropout ? static_cast<float>(opt_.lora->spec.dropout) : 0.0f;
    // A fused module (Phi-3 qkv_proj, gate_up_proj) applies one dropout mask to its input.
    const int module = (c_.fused_qkv && t <= kV) ? kQ : (c_.fused_gate_up && t == kUp) ? kGate : t;
    cfg.seed = counter_hash(opt_.dropout_seed, l * 8 + static_cast<uint64_t>(module));
    return cfg;
  }

  void project(size_t l, int t, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, LayerActs& a) const {
    if (adapted(l, t)) {
      a.xa[static_cast<size_t>(t)] = make(Shape{n_, opt_.lora->spec.rank});
      lora_forward(ctx_, x, w, bias.defined() ? &bias : nullptr, opt_.lora->a[l][static_cast<size_t>(t)],
                   opt_.lora->b[l][static_cast<size_t>(t)], lora_config(l, t), y, a.xa[static_cast<size_t>(t)]);
    } else {
      linear_forward(ctx_, x, w, bias.defined() ? &bias : nullptr, y);
    }
  }

  // Gradient of a projection y = proj(x): dx written or accumulated (null: not needed), the
  // weight's (full) or the adapter's (LoRA) gradients accumulated.
  void project_backward(size_t l, int t, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc_dx,
                        const LayerActs& a, Gradients& g, Tensor* dw, Tensor* dbias) const {
    if (adapted(l, t) && !g.lora.modules.empty()) {
      LoraGrads lg;
      lg.dx = dx;
      lg.accumulate_dx = acc_dx;
      lg.da = &g.lora.a[l][static_cast<size_t>(t)];
      lg.db = &g.lora.b[l][static_cast<size_t>(t)];
      lg.accumulate_ab = true;
      lora_backward(ctx_, x, w, opt_.lora->a[l][static_cast<size_t>(t)], opt_.lora->b[l][static_cast<size_t>(t)],
                    a.xa[static_cast<size_t>(t)], dy, lora_config(l, t), lg);
      return;
    }
    LinearGrads lg;
    lg.dx = dx;
    lg.accumulate_dx = acc_dx;
    lg.dw = dw;
    lg.accumulate_dw = true;
    lg.dbias = dbias;
    linear_backward(ctx_, x, w, dy, lg);
  }

  // x (N, C) -> out (N, C); internals into a.
  void layer_forward(size_t l, const LayerWeights& L, const Tensor& x, LayerActs& a, Tensor& out) const {
    const int64_t C = c_.hidden_size, F = c_.intermediate_size, H = c_.num_attention_heads,
                  KVH = c_.num_key_value_heads, D = c_.head_dim;
    const float eps = static_cast<float>(c_.rms_norm_eps);
    a.h1 = make(Shape{n_, C});
    a.rstd1 = stat(Shape{n_});
    rmsnorm_forward(ctx_, x, L.input_norm, eps, a.h1, a.rstd1);
    Tensor q = make(Shape{n_, H * D}), k = make(Shape{n_, KVH * D}), v = make(Shape{n_, KVH * D});
    project(l, kQ, a.h1, L.wq, L.bq, q, a);
    project(l, kK, a.h1, L.wk, L.bk, k, a);
    project(l, kV, a.h1, L.wv, L.bv, v, a);
    a.q = q.reshape(Shape{n_, H, D});
    a.k = k.reshape(Shape{n_, KVH, D});
    a.v = v.reshape(Shape{n_, KVH, D});
    rope_forward(ctx_, a.q, batch_->positions, inv_freq_);
    rope_forward(ctx_, a.k, batch_->positions, inv_freq_);
    a.att = make(Shape{n_, H, D});
    a.lse = stat(Shape{n_, H});
    attention_forward(ctx_, a.q, a.k, a.v, batch_->seqs, scale_, a.att, a.lse);
    Tensor o = make(Shape{n_, C});
    project(l, kO, a.att.reshape(Shape{n_, H * D}), L.wo, L.bo, o, a);
    a.x2 = make(Shape{n_, C});
    add(ctx_, x, o, a.x2);
    a.h2 = make(Shape{n_, C});
    a.rstd2 = stat(Shape{n_});
    rmsnorm_forward(ctx_, a.x2, L.post_attn_norm, eps, a.h2, a.rstd2);
    a.g = make(Shape{n_, F});
    a.u = make(Shape{n_, F});
    project(l, kGate, a.h2, L.wgate, Tensor(), a.g, a);
    project(l, kUp, a.h2, L.wup, Tensor(), a.u, a);
    a.s = make(Shape{n_, F});
    swiglu_forward(ctx_, a.g, a.u, a.s);
    project(l, kDown, a.s, L.wdown, Tensor(), o, a);
    add(ctx_, a.x2, o, out);
  }

  // dx (N, C): the gradient at the layer's output in, at its input out (in place); null
  // need_dx: the input gradient is not needed (the lowest trained layer).
  void layer_backward(size_t l, const LayerWeights& L, const Tensor& x, const LayerActs& a, Tensor& dx, bool need_dx,
                      Gradients& g) const {
    LayerWeights* G = g.full ? &g.full->layers[l] : nullptr;
    const auto gp = [&](Tensor LayerWeights::*field) -> Tensor* {
      return G && (G->*field).defined() ? &(G->*field) : nullptr;
    };
    const int64_t C = c_.hidden_size, F = c_.intermediate_size, H = c_.num_attention_heads,
                  KVH = c_.num_key_value_heads, D = c_.head_dim;
    // MLP: out = x2 + down(swiglu(gate(h2), up(h2))).
    Tensor ds = make(Shape{n_, F}), dg = make(Shape{n_, F}), du = make(Shape{n_, F}), dh = make(Shape{n_, C});
    project_backward(l, kDown, a.s, L.wdown, dx, &ds, false, a, g, gp(&LayerWeights::wdown), nullptr);
    swiglu_backward(ctx_, a.g, a.u, ds, dg, du);
    project_backward(l, kGate, a.h2, L.wgate, dg, &dh, false, a, g, gp(&LayerWeights::wgate), nullptr);
    project_backward(l, kUp, a.h2, L.wup, du, &dh, true, a, g, gp(&LayerWeights::wup), nullptr);
    norm_backward(a.x2, L.post_attn_norm, a.rstd2, dh, dx, gp(&LayerWeights::post_attn_norm));
    // Attention: x2 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1))).
    Tensor datt = make(Shape{n_, H * D});
    project_backward(l, kO, a.att.reshape(Shape{n_, H * D}), L.wo, dx, &datt, false, a, g, gp(&LayerWeights::wo),
                     gp(&LayerWeights::bo));
    Tensor dq = make(Shape{n_, H, D}), dk = make(Shape{n_, KVH, D}), dv = make(Shape{n_, KVH, D});
    attention_backward(ctx_, a.q, a.k, a.v, a.att, a.lse, datt.reshape(Shape{n_, H, D}), batch_->seqs, scale_, dq, dk,
                       dv);
    rope_backward(ctx_, dq, batch_->positions, inv_freq_);
    rope_backward(ctx_, dk, batch_->positions, inv_freq_);
    Tensor* dh1 = need_dx ? &dh : nullptr;
    project_backward(l, kQ, a.h1, L.wq, dq.reshape(Shape{n_, H * D}), dh1, false, a, g, gp(&LayerWeights::wq),
                     gp(&LayerWeights::bq));
    project_backward(l, kK, a.h1, L.wk, dk.reshape(Shape{n_, KVH * D}), dh1, true, a, g, gp(&LayerWeights::wk),
                     gp(&LayerWeights::bk));
    project_backward(l, kV, a.h1, L.wv, dv.reshape(Shape{n_, KVH * D}), dh1, true, a, g, gp(&LayerWeights::wv),
                     gp(&LayerWeights::bv));
    if (need_dx || G) norm_backward(x, L.input_norm, a.rstd1, dh, dx, gp(&LayerWeights::input_norm));
  }

  // dx += rmsnorm backward; the weight's gradient (written by the kernel) added into dweight.
  void norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                     Tensor* dweight) const {
    if (!dweight) {
      rmsnorm_backward(ctx_, x, w, rstd, dy, dx, nullptr, true);
      return;
    }
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

  // The low-VRAM pass: weights arrive chunk by chunk (model/streaming.h); only layer inputs
  // are kept, every layer's internals are rebuilt in the backward, and the backward stops at
  // the lowest trained layer. The same kernels in the same order as run() with recompute and
  // the sliced head, so the results have the same bits. Several lanes (micro-batches, one
  // Pass each) share every weight load: each chunk serves lane 0, then lane 1, ... so a
  // gradient receives the lanes' contributions in lane order, as consecutive passes would add
  // them. Returns lane 0's loss as run() does (NaN with loss_out).
  static double run_streamed(const std::vector<Pass*>& lanes, const std::vector<const TrainBatch*>& batches,
                             Gradients* grads) {
    ONN_CHECK_ARG(!lanes.empty() && lanes.size() == batches.size(), "a streamed pass needs one batch per lane");
    Pass& first = *lanes.front();
    Context& ctx = first.ctx_;
    const ModelConfig& c = first.c_;
    StreamedWeights& sw = *first.opt_.stream;
    const size_t L = static_cast<size_t>(c.num_hidden_layers), G = lanes.size();
    const int64_t C = c.hidden_size, k = sw.layers_per_chunk();
    for (size_t m = 0; m < G; ++m) {
      ONN_CHECK_ARG(lanes[m]->opt_.stream == &sw && lanes[m]->opt_.lora == first.opt_.lora,
                    "the lanes of a streamed pass share one stream and one adapter");
      ONN_CHECK_ARG(G == 1 || lanes[m]->opt_.loss_out, "a streamed pass of several micro-batches leaves each loss in "
                    "its loss_out");
      lanes[m]->batch_ = batches[m];
      check_context_length(c, batches[m]->seqs.max_seqlen, "training");
    }
    ONN_CHECK_ARG(!(grads && grads->full), "layer streaming trains LoRA adapters only (full training keeps its weights "
                  "on the device)");
    size_t lowest = L;
    if (grads)
      for (const LoraModule& m : grads->lora.modules) lowest = std::min(lowest, static_cast<size_t>(m.layer));
    const bool train = grads && lowest < L;
    sw.plan_pass(train ? static_cast<int64_t>(lowest) : -1);
    // With offload, layer inputs the backward needs go to host memory as soon as they exist
    // and leave the device once the next layer has read them; the top
    // activation_layers_on_device of them stay on the device.
    const bool offload = train && sw.offload_activations();
    const auto keep = [&](size_t l) { return train && l >= lowest && l < L; };
    const size_t on_device = static_cast<size_t>(std::min<int64_t>(sw.activation_layers_on_device(), int64_t(L)));
    const auto offloaded = [&](size_t l) { return offload && keep(l) && l < L - on_device; };
    if (offload) {
      int64_t rows = 0;
      for (const Pass* p : lanes) rows = std::max(rows, p->n_);
      sw.reserve_activations(ctx, G, static_cast<size_t>(rows * C) * dtype_size(first.model_.dtype()));
    }
    std::vector<std::vector<Tensor>> xs(G, std::vector<Tensor>(L + 1));  // per lane: layer inputs, last output
    for (size_t m = 0; m < G; ++m) {
      const TrainBatch& b = *batches[m];
      xs[m][0] = lanes[m]->make(Shape{lanes[m]->n_, C});
      sw.embed(ctx, b.host_ids.defined() ? b.host_ids : b.ids, xs[m][0]);
      if (offloaded(0)) sw.offload(ctx, m, 0, xs[m][0]);
    }
    for (int64_t ch = 0; ch < sw.layer_chunks(); ++ch) {
      const std::vector<LayerWeights>& Ws = sw.acquire_layers(ch);
      for (size_t i = 0; i < Ws.size(); ++i) {
        const size_t l = static_cast<size_t>(ch * k) + i;
        for (size_t m = 0; m < G; ++m) {
          Pass& P = *lanes[m];
          std::vector<Tensor>& x = xs[m];
          LayerActs scratch;
          x[l + 1] = P.make(Shape{P.n_, C});
          P.layer_forward(l, Ws[i], x[l], scratch, x[l + 1]);
          if (offloaded(l + 1)) sw.offload(ctx, m, l + 1, x[l + 1]);
          if (!keep(l)) {
            x[l] = Tensor();
          } else if (offloaded(l)) {
            sw.retire(ctx, m, l);  // its copy out is done before the memory is reused
            x[l] = Tensor();
          }
        }
      }
      sw.release();
    }
    std::vector<Tensor> hf(G), rstd(G), loss(G), valid(G);
    std::vector<std::unique_ptr<SlicedLmHeadLoss>> head(G);
    for (size_t m = 0; m < G; ++m) {
      Pass& P = *lanes[m];
      hf[m] = P.make(Shape{P.n_, C});
      rstd[m] = P.stat(Shape{P.n_});
      rmsnorm_forward(ctx, xs[m][L], sw.norm(), static_cast<float>(c.rms_norm_eps), hf[m], rstd[m]);
      if (!train) xs[m][L] = Tensor();
      loss[m] = Tensor::empty(Shape{1}, loss_dtype(P.model_.dtype()), ctx.allocator());
      if (P.opt_.loss_tokens > 0) {
        valid[m] = Tensor::empty(Shape{1}, loss_dtype(P.model_.dtype()), ctx.allocator());
        fill(ctx, valid[m], static_cast<float>(P.opt_.loss_tokens));
      }
      LmHeadLossOptions lo;
      head[m] = std::make_unique<SlicedLmHeadLoss>(ctx, hf[m], batches[m]->labels, c.vocab_size,
                                                   valid[m].defined() ? &valid[m] : nullptr, lo.chunk_tokens,
                                                   sw.head_granule());
    }
    for (int64_t s = 0; s < sw.head_slices(); ++s) {
      int64_t v0 = 0;
      const Tensor w = sw.acquire_head(s, &v0);
      for (size_t m = 0; m < G; ++m) head[m]->forward_slice(v0, w);
      sw.release();
    }
    for (size_t m = 0; m < G; ++m) head[m]->finish(loss[m]);
    if (train) {
      std::vector<Tensor> dh(G), dx(G);
      for (size_t m = 0; m < G; ++m) dh[m] = lanes[m]->make(Shape{lanes[m]->n_, C});
      for (int64_t s = sw.head_slices(); s-- > 0;) {
        int64_t v0 = 0;
        const Tensor w = sw.acquire_head(s, &v0);
        for (size_t m = 0; m < G; ++m) head[m]->backward_slice(v0, w, dh[m]);
        sw.release();
      }
      for (size_t m = 0; m < G; ++m) {
        Pass& P = *lanes[m];
        dx[m] = P.make(Shape{P.n_, C});
        dx[m].fill_bytes(0, &ctx.compute());
        P.norm_backward(xs[m][L], sw.norm(), rstd[m], dh[m], dx[m], nullptr);
        xs[m][L] = Tensor();
        dh[m] = Tensor();  // the head's state goes too: only dx carries on
        head[m].reset();
        hf[m] = Tensor();
        rstd[m] = Tensor();
      }
      // Offloaded layer inputs come back ahead of their layer: two layers ahead with one lane
      // (a copy queued behind a weight chunk on the same copy engine still arrives in time),
      // one with several (the other lanes' work on the layer comes first). back[m] is lane
      // m's highest offloaded layer not yet asked back.
      const int64_t ahead = G == 1 ? 2 : 1;
      std::vector<int64_t> back(G, static_cast<int64_t>(L) - 1);
      const auto bring_back_from = [&](size_t m, int64_t from) {
        for (; back[m] >= static_cast<int64_t>(lowest) && back[m] >= from; --back[m])
          if (offloaded(static_cast<size_t>(back[m])))
            xs[m][static_cast<size_t>(back[m])] =
                sw.bring_back(ctx, m, static_cast<size_t>(back[m]), Shape{lanes[m]->n_, C});
      };
      if (offload)
        for (size_t m = 0; m < G; ++m) bring_back_from(m, static_cast<int64_t>(L) - ahead);
      for (int64_t ch = sw.layer_chunks(); ch-- > static_cast<int64_t>(lowest) / k;) {
        const std::vector<LayerWeights>& Ws = sw.acquire_layers(ch);
        for (size_t i = Ws.size(); i-- > 0;) {
          const size_t l = static_cast<size_t>(ch * k) + i;
          if (l < lowest) break;
          for (size_t m = 0; m < G; ++m) {
            Pass& P = *lanes[m];
            if (offload) {  // this layer's input is on the device or (being) copied back; start the next
              if (offloaded(l)) sw.await_back(ctx, m, l);
              bring_back_from(m, static_cast<int64_t>(l) - ahead);
            }
            LayerActs recomputed;
            Tensor scratch_out = P.make(Shape{P.n_, C});
            P.layer_forward(l, Ws[i], xs[m][l], recomputed, scratch_out);
            P.layer_backward(l, Ws[i], xs[m][l], recomputed, dx[m], l > lowest, *grads);
            xs[m][l] = Tensor();
          }
        }
        sw.release();
      }
    }
    const double first_loss = first.finish(loss[0]);
    for (size_t m = 1; m < G; ++m) lanes[m]->finish(loss[m]);
    return first_loss;
  }

  double run(const TrainBatch& batch, Gradients* grads) {
    if (opt_.stream) return run_streamed({this}, {&batch}, grads);
    batch_ = &batch;
    const size_t L = model_.weights().layers.size();
    const ModelWeights& W = model_.weights();
    const int64_t C = c_.hidden_size;
    check_context_length(c_, batch.seqs.max_seqlen, "training");
    // The lowest layer whose backward produces a gradient: LoRA stops there.
    size_t lowest = 0;
    if (grads && !grads->full) {
      lowest = L;
      for (const LoraModule& m : grads->lora.modules) lowest = std::min(lowest, static_cast<size_t>(m.layer));
    }
    std::vector<Tensor> xs(L + 1);  // layer inputs, then the last layer's output
    std::vector<LayerActs> acts(grads && !opt_.recompute ? L : 0);
    xs[0] = make(Shape{n_, C});
    embedding_forward(ctx_, W.embed, batch.ids, xs[0]);
    for (size_t l = 0; l < L; ++l) {
      LayerActs scratch;
      xs[l + 1] = make(Shape{n_, C});
      layer_forward(l, W.layers[l], xs[l], acts.empty() ? scratch : acts[l], xs[l + 1]);
      if (!grads || l < lowest) xs[l] = Tensor();  // no backward reaches below `lowest`
    }
    Tensor hf = make(Shape{n_, C}), rstd = stat(Shape{n_});
    rmsnorm_forward(ctx_, xs[L], W.norm, static_cast<float>(c_.rms_norm_eps), hf, rstd);
    Tensor loss = Tensor::empty(Shape{1}, loss_dtype(model_.dtype()), ctx_.allocator());
    LmHeadLossOptions lo;
    lo.accumulate_dw = true;
    Tensor valid;
    if (opt_.loss_tokens > 0) {
      valid = Tensor::empty(Shape{1}, loss_dtype(model_.dtype()), ctx_.allocator());
      fill(ctx_, valid, static_cast<float>(opt_.loss_tokens));
      lo.valid = &valid;
    }
    const bool sliced = opt_.head_granule > 0 && !(grads && grads->full);
    std::optional<SlicedLmHeadLoss> head;
    if (sliced) {  // the streamed path's LM head, the whole vocabulary as one slice
      head.emplace(ctx_, hf, batch.labels, c_.vocab_size, lo.valid, lo.chunk_tokens, opt_.head_granule);
      head->forward_slice(0, W.lm_head);
      head->finish(loss);
    }
    if (!grads || lowest == L) {  // evaluation, or nothing to train
      if (!sliced) lm_head_cross_entropy(ctx_, hf, W.lm_head, batch.labels, loss, nullptr, nullptr, lo);
    } else {
      Tensor dh = make(Shape{n_, C});
      Tensor* dhead = grads->full ? &grads->full->lm_head : nullptr;
      if (sliced)
        head->backward_slice(0, W.lm_head, dh);
      else
        lm_head_cross_entropy(ctx_, hf, W.lm_head, batch.labels, loss, &dh, dhead, lo);
      Tensor dx = make(Shape{n_, C});
      dx.fill_bytes(0, &ctx_.compute());
      norm_backward(xs[L], W.norm, rstd, dh, dx, grads->full ? &grads->full->norm : nullptr);
      for (size_t l = L; l-- > lowest;) {
        LayerActs recomputed;
        if (opt_.recompute) {
          Tensor scratch_out = make(Shape{n_, C});
          layer_forward(l, W.layers[l], xs[l], recomputed, scratch_out);
        }
        layer_backward(l, W.layers[l], xs[l], opt_.recompute ? recomputed : acts[l], dx,
                       l > lowest || grads->full.has_value(), *grads);
        if (!opt_.recompute) acts[l] = LayerActs();  // free as we go
      }
      if (grads->full) embedding_backward(ctx_, batch.ids, dx, grads->full->embed);
    }
    return finish(loss);
  }

 private:
  // The loss to the caller: into opt_.loss_out without waiting, or read back.
  double finish(const Tensor& loss) {
    if (opt_.loss_out) {
      opt_.loss_out->copy_from(loss, &ctx_.compute());
      return std::numeric_limits<double>::quiet_NaN();
    }
    ctx_.synchronize();
    const Tensor host = loss.to(Device::cpu());
    return load_as_double(host.data(), host.dtype(), 0);
  }

  Context& ctx_;
  const LlamaModel& model_;
  const ModelConfig& c_;
  PassOptions opt_;
  int64_t n_;
  const Tensor& inv_freq_;
  float scale_;
  const TrainBatch* batch_ = nullptr;
};

// PassOptions::loss_out, when set (or required): one value of the loss dtype on the device,
// checked before any gradient is touched.
void check_loss_out(Context& ctx, const LlamaModel& model, const Tensor* out, bool required, const char* where) {
  const DType t = loss_dtype(model.dtype());
  ONN_CHECK_ARG(out || !required, where, ": each micro-batch needs PassOptions::loss_out");
  if (out)
    ONN_CHECK_ARG(out->numel() == 1 && out->dtype() == t && out->device() == ctx.device(), where,
                  ": PassOptions::loss_out must be one ", dtype_name(t), " on ", ctx.device().str());
}

void check_batch(const TrainBatch& b) {
  ONN_CHECK_ARG(b.ids.rank() == 1 && b.ids.dtype() == DType::i32 && b.positions.shape() == b.ids.shape() &&
                    b.positions.dtype() == DType::i32 && b.labels.shape() == b.ids.shape() &&
                    b.labels.dtype() == DType::i32,
                "training batch: ids, positions and labels must be (N) I32");
}

}  // namespace

double forward_backward(Context& ctx, LlamaModel& model, const TrainBatch& batch, Gradients& grads,
                        const PassOptions& opt) {
  check_batch(batch);
  ONN_CHECK_ARG(grads.full.has_value() != (opt.lora != nullptr),
                "forward_backward: LoRA gradients need the adapter, full gradients none");
  check_loss_out(ctx, model, opt.loss_out, false, "forward_backward");
  Pass pass(ctx, model, opt, batch.ids.dim(0));
  return pass.run(batch, &grads);
}

namespace {
// The checks a group of lanes sharing each weight load passes before any pass runs.
void check_group(Context& ctx, const LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                 const Gradients& grads, const PassOptions* opts, const char* where) {
  for (size_t i = 0; i < batches.size(); ++i) {
    const PassOptions& o = opts[i];
    check_batch(*batches[i]);
    ONN_CHECK_ARG(o.stream && o.lora && !grads.full, where, " streams LoRA training (PassOptions::stream and ::lora "
                  "set, LoRA gradients)");
    ONN_CHECK_ARG(o.stream == opts[0].stream && o.lora == opts[0].lora, where, ": the micro-batches sharing a weight "
                  "load share one stream and one adapter");
    check_loss_out(ctx, model, o.loss_out, true, where);
  }
}
}  // namespace

void forward_backward_group(Context& ctx, LlamaModel& model, const std::vector<const TrainBatch*>& batches,
                            Gradients& grads, const std::vector<PassOptions>& opts) {
  ONN_CHECK_ARG(!batches.empty() && batches.size() == opts.size(), "forward_backward_group: ", batches.size(),
                " batches and ", opts.size(), " pass options");
  check_group(ctx, model, batches, grads, opts.data(), "forward_backward_group");
  std::vector<std::unique_ptr<Pass>> passes;
  std::vector<Pass*> lanes;
  for (size_t i = 0; i < batches.size(); ++i) {
    passes.push_back(std::make_unique<Pass>(ctx, model, opts[i], batches[i]->ids.dim(0)));
    lanes.push_back(passes.back().get());
  }
  Pass::run_streamed(lanes, batches, &grads);
}

void forward_backward_groups(Context& ctx, LlamaModel& model, const std::vector<TrainBatch>& batches,
                             Gradients& grads, const std::vector<PassOptions>& opts, size_t per_load) {
  ONN_CHECK_ARG(batches.size() == opts.size(), "forward_backward_groups: ", batches.size(), " batches and ",
                opts.size(), " pass options");
  ONN_CHECK_ARG(per_load >= 1, "forward_backward_groups: at least one micro-batch per load");
  // Every group is checked before the first runs: a bad option in a later group must not leave
  // the gradients holding the earlier groups' part of the step.
  std::vector<std::vector<const TrainBatch*>> groups;
  for (size_t i = 0; i < batches.size(); i += per_load) {
    groups.emplace_back();
    for (size_t j = i; j < std::min(batches.size(), i + per_load); ++j) groups.back().push_back(&batches[j]);
    const PassOptions* o = opts.data() + i;
    if (groups.back().size() > 1) {
      check_group(ctx, model, groups.back(), grads, o, "forward_backward_groups");
    } else {
      check_batch(batches[i]);
      ONN_CHECK_ARG(grads.full.has_value() != (o->lora != nullptr),
                    "forward_backward_groups: LoRA gradients need the adapter, full gradients none");
      check_loss_out(ctx, model, o->loss_out, true, "forward_backward_groups");
    }
  }
  size_t i = 0;
  for (const std::vector<const TrainBatch*>& group : groups) {
    const auto first = opts.begin() + static_cast<std::ptrdiff_t>(i);
    if (group.size() == 1)
      forward_backward(ctx, model, *group[0], grads, *first);
    else
      forward_backward_group(ctx, model, group, grads,
                             std::vector<PassOptions>(first, first + static_cast<std::ptrdiff_t>(group.size())));
    i += group.size();
  }
}

double forward_loss(Context& ctx, const LlamaModel& model, const TrainBatch& batch, const PassOptions& opt) {
  check_batch(batch);
  PassOptions o = opt;
  o.dropout = false;
  o.loss_out = nullptr;  // evaluation returns its loss
  Pass pass(ctx, model, o, batch.ids.dim(0));
  return pass.run(batch, nullptr);
}

}  // namespace onn
