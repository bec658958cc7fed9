// The LLaMA-family model: weight loading by HF names and the packed forward.
#include "model/llama.h"

#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/streaming.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace onn {

DType default_compute_dtype(Device device) { return device.is_cuda() ? DType::bf16 : DType::f32; }

namespace {

class WeightLoader {
 public:
  WeightLoader(Context& ctx, const SafetensorsModel& st, DType dtype) : ctx_(ctx), st_(st), dtype_(dtype) {}

  bool has(const std::string& name) const { return st_.find(name) != nullptr; }

  Tensor get(const std::string& name, const Shape& want) const {
    if (!has(name)) throw FormatError(st_.source() + ": tensor \"" + name + "\" is missing");
    Tensor raw = st_.tensor(name);
    if (!(raw.shape() == want))
      throw FormatError(st_.source() + ": tensor \"" + name + "\" has shape " + raw.shape().str() +
                        " but config.json implies " + want.str());
    if (!dtype_is_float(raw.dtype()))
      throw FormatError(st_.source() + ": tensor \"" + name + "\" has dtype " + std::string(dtype_name(raw.dtype())));
    if (raw.dtype() == DType::f16 || raw.dtype() == DType::f64) raw = raw.to_dtype(DType::f32);
    Tensor out = Tensor::empty(want, dtype_, ctx_.allocator());
    if (raw.dtype() == dtype_) {
      out.copy_from(raw);  // the file's dtype is the compute dtype: a plain copy
    } else if (ctx_.device().is_cpu()) {
      cast(ctx_, raw, out);
    } else {
      const Tensor dev = raw.to(ctx_.device());
      cast(ctx_, dev, out);
      ctx_.synchronize();
    }
    return out;
  }

 private:
  Context& ctx_;
  const SafetensorsModel& st_;
  DType dtype_;
};


}  // namespace

LlamaModel LlamaModel::load(Context& ctx, const std::string& dir, std::optional<DType> compute) {
  return load_into(ctx, ctx, dir, compute.value_or(default_compute_dtype(ctx.device())));
}

LlamaModel LlamaModel::load_to_host(Context& ctx, const std::string& dir, std::optional<DType> compute) {
  Context host(Device::cpu(), ctx.device().is_cuda() ? static_cast<Allocator&>(pinned_allocator()) : cpu_allocator(),
               0);
  LlamaModel m = load_into(ctx, host, dir, compute.value_or(default_compute_dtype(ctx.device())));
  m.on_host_ = true;
  return m;
}

LlamaModel LlamaModel::load_into(Context& ctx, Context& home, const std::string& dir, DType compute) {
  const SafetensorsModel st = SafetensorsModel::open(dir);
  const WeightLoader w(home, st, compute);
  return assemble(ctx, load_model_config(dir), compute,
                  [&](const std::string& name, const Shape& want) { return w.get(name, want); });
}

LlamaModel LlamaModel::placeholder_on_host(Context& ctx, const ModelConfig& config, DType compute) {
  const int64_t C = config.hidden_size, F = config.intermediate_size,
                HD = config.num_attention_heads * config.head_dim, KD = config.num_key_value_heads * config.head_dim;
  const int64_t largest = std::max({config.vocab_size * C, (HD + 2 * KD) * C, 2 * F * C, HD * C});
  ONN_CHECK_ARG(largest > 0, "placeholder model: empty shapes");
  // One buffer for every tensor; its pages are never written, so it costs address space only.
  const Tensor shared = Tensor::empty(Shape{largest}, compute, cpu_allocator());
  LlamaModel m = assemble(ctx, config, compute, [&](const std::string&, const Shape& want) {
    return shared.view(0, want, compute);
  });
  m.on_host_ = true;
  return m;
}

LlamaModel LlamaModel::assemble(Context& ctx, const ModelConfig& config, DType compute, const WeightSource& source) {
  LlamaModel m;
  m.config_ = config;
  m.dtype_ = compute;
  const ModelConfig& c = m.config_;
  const int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.num_attention_heads * c.head_dim,
                KD = c.num_key_value_heads * c.head_dim, V = c.vocab_size;
  m.weights_.embed = source("model.embed_tokens.weight", Shape{V, C});
  m.weights_.norm = source("model.norm.weight", Shape{C});
  if (c.tie_word_embeddings) {
    m.weights_.lm_head = m.weights_.embed;
  } else {
    m.weights_.lm_head = source("lm_head.weight", Shape{V, C});
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights L;
    L.input_norm = source(p + "input_layernorm.weight", Shape{C});
    L.post_attn_norm = source(p + "post_attention_layernorm.weight", Shape{C});
    if (c.fused_qkv) {
      L.qkv = source(p + "self_attn.qkv_proj.weight", Shape{HD + 2 * KD, C});
      L.wq = L.qkv.slice(0, HD);
      L.wk = L.qkv.slice(HD, HD + KD);
      L.wv = L.qkv.slice(HD + KD, HD + 2 * KD);
    } else {
      L.wq = source(p + "self_attn.q_proj.weight", Shape{HD, C});
      L.wk = source(p + "self_attn.k_proj.weight", Shape{KD, C});
      L.wv = source(p + "self_attn.v_proj.weight", Shape{KD, C});
    }
    if (c.attention_bias) {
      L.bq = source(p + "self_attn.q_proj.bias", Shape{HD});
      L.bk = source(p + "self_attn.k_proj.bias", Shape{KD});
      L.bv = source(p + "self_attn.v_proj.bias", Shape{KD});
    }
    L.wo = source(p + "self_attn.o_proj.weight", Shape{C, HD});
    if (c.o_bias) L.bo = source(p + "self_attn.o_proj.bias", Shape{C});
    if (c.fused_gate_up) {
      L.gate_up = source(p + "mlp.gate_up_proj.weight", Shape{2 * F, C});
      L.wgate = L.gate_up.slice(0, F);
      L.wup = L.gate_up.slice(F, 2 * F);
    } else {
      L.wgate = source(p + "mlp.gate_proj.weight", Shape{F, C});
      L.wup = source(p + "mlp.up_proj.weight", Shape{F, C});
    }
    L.wdown = source(p + "mlp.down_proj.weight", Shape{C, F});
    m.weights_.layers.push_back(std::move(L));
  }
  m.inv_freq_ = rope_inv_freq_tensor(ctx, c.rope, m.dtype_ == DType::f64 ? DType::f64 : DType::f32);
  return m;
}

Tensor LlamaModel::run_blocks(Context& ctx, const Tensor& ids, const Tensor& positions,
                              const AttentionFn& attend) const {
  const ModelConfig& c = config_;
  ONN_CHECK_ARG(!on_host_ || stream_, "model forward: the weights are in host memory (loaded for layer streaming) "
                "and no stream is attached");
  ONN_CHECK_ARG(ids.rank() == 1 && ids.dtype() == DType::i32, "model forward: ids must be (N) I32, got ",
                ids.shape().str());
  const int64_t N = ids.dim(0), C = c.hidden_size, F = c.intermediate_size, H = c.num_attention_heads,
                KVH = c.num_key_value_heads, D = c.head_dim;
  Allocator& A = ctx.allocator();
  const auto make = [&](const Shape& s) { return Tensor::empty(s, dtype_, A); };
  Tensor x = make(Shape{N, C}), h = make(Shape{N, C}), rstd = Tensor::empty(Shape{N}, norm_stat_dtype(dtype_), A);
  Tensor q = make(Shape{N, H * D}), k = make(Shape{N, KVH * D}), v = make(Shape{N, KVH * D});
  Tensor att = make(Shape{N, H * D}), o = make(Shape{N, C}), gate = make(Shape{N, F}), up = make(Shape{N, F});
  const std::vector<LayerWeights>* chunk = nullptr;  // streamed: the layers on the device
  const size_t per_chunk = stream_ ? static_cast<size_t>(stream_->layers_per_chunk()) : 1;
  if (stream_) {
    stream_->plan_pass(-1);  // layer chunks, then the head slices project / loss take
    stream_->embed(ctx, ids, x);
  } else {
    embedding_forward(ctx, weights_.embed, ids, x);
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  bool pending = false;  // o holds a branch output not yet added into the residual x
  for (size_t l = 0; l < static_cast<size_t>(c.num_hidden_layers); ++l) {
    if (stream_ && l % per_chunk == 0) {
      if (chunk) stream_->release();
      chunk = &stream_->acquire_layers(static_cast<int64_t>(l / per_chunk));
    }
    const LayerWeights& L = stream_ ? (*chunk)[l % per_chunk] : weights_.layers[l];
    if (pending)
      add_rmsnorm_forward(ctx, x, o, L.input_norm, eps, h, rstd);
    else
      rmsnorm_forward(ctx, x, L.input_norm, eps, h, rstd);
    linear_forward(ctx, h, L.wq, L.bq.defined() ? &L.bq : nullptr, q);
    linear_forward(ctx, h, L.wk, L.bk.defined() ? &L.bk : nullptr, k);
    linear_forward(ctx, h, L.wv, L.bv.defined() ? &L.bv : nullptr, v);
    Tensor q3 = q.reshape(Shape{N, H, D}), k3 = k.reshape(Shape{N, KVH, D}), v3 = v.reshape(Shape{N, KVH, D});
    rope_forward(ctx, q3, positions, inv_freq_);
    rope_forward(ctx, k3, positions, inv_freq_);
    Tensor att3 = att.reshape(Shape{N, H, D});
    attend(l, q3, k3, v3, att3);
    linear_forward(ctx, att, L.wo, L.bo.defined() ? &L.bo : nullptr, o);
    add_rmsnorm_forward(ctx, x, o, L.post_attn_norm, eps, h, rstd);
    linear_forward(ctx, h, L.wgate, nullptr, gate);
    linear_forward(ctx, h, L.wup, nullptr, up);
    swiglu_forward(ctx, gate, up, gate);
    linear_forward(ctx, gate, L.wdown, nullptr, o);
    pending = true;
  }
  if (chunk) stream_->release();
  const Tensor& norm = stream_ ? stream_->norm() : weights_.norm;
  if (pending)
    add_rmsnorm_forward(ctx, x, o, norm, eps, h, rstd);
  else
    rmsnorm_forward(ctx, x, norm, eps, h, rstd);
  return h;
}

Tensor LlamaModel::hidden_states(Context& ctx, const Tensor& ids, const Tensor& positions,
                                 const AttentionSeqs& seqs) const {
  check_context_length(config_, seqs.max_seqlen, "model forward");
  const float scale = attention_scale();
  Tensor lse = Tensor::empty(Shape{ids.dim(0), config_.num_attention_heads}, norm_stat_dtype(dtype_), ctx.allocator());
  return run_blocks(ctx, ids, positions, [&](size_t, Tensor& q, Tensor& k, Tensor& v, Tensor& out) {
    attention_forward(ctx, q, k, v, seqs, scale, out, lse);
  });
}

float LlamaModel::attention_scale() const {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.head_dim)));
}

Tensor LlamaModel::project(Context& ctx, const Tensor& h) const {
  const int64_t V = config_.vocab_size;
  Tensor out = Tensor::empty(Shape{h.dim(0), V}, dtype_, ctx.allocator());
  if (!stream_) {
    linear_forward(ctx, h, weights_.lm_head, nullptr, out);
    return out;
  }
  // Streamed: each head slice gives columns [v0, v0 + rows) of every row.
  for (int64_t s = 0; s < stream_->head_slices(); ++s) {
    int64_t v0 = 0;
    const Tensor w = stream_->acquire_head(s, &v0);
    const int64_t rows = w.dim(0);
    for (int64_t b = 0; b < h.dim(0); ++b) {
      Tensor cols = out.view(static_cast<size_t>(b * V + v0) * dtype_size(dtype_), Shape{1, rows}, dtype_);
      linear_forward(ctx, h.slice(b, b + 1), w, nullptr, cols);
    }
    stream_->release();
  }
  return out;
}

KVCache LlamaModel::make_cache(Context& ctx, int64_t batch, int64_t max_len) const {
  ONN_CHECK_ARG(batch >= 1 && max_len >= 1, "KV cache: batch and max_len must be positive, got ", batch, " and ",
                max_len);
  check_context_length(config_, max_len, "KV cache");
  KVCache cache;
  cache.batch = batch;
  cache.max_len = max_len;
  const Shape s{batch, max_len, config_.num_key_value_heads, config_.head_dim};
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    cache.k.push_back(Tensor::empty(s, dtype_, ctx.allocator()));
    cache.v.push_back(Tensor::empty(s, dtype_, ctx.allocator()));
  }
  cache.lens.assign(static_cast<size_t>(batch), 0);
  cache.lens_dev = Tensor::empty(Shape{batch}, DType::i32, ctx.allocator());
  return cache;
}

namespace {
// Rows [row, row + count) of sequence b of a (B, Tmax, KVH, D) cache, as (count, KVH * D).
Tensor cache_rows(const Tensor& cache, int64_t b, int64_t row, int64_t count) {
  const int64_t tmax = cache.dim(1), width = cache.dim(2) * cache.dim(3);
  return cache.slice(b, b + 1).reshape(Shape{tmax, width}).slice(row, row + count);
}

// Host ints as an I32 tensor on ctx's device.
Tensor device_i32(Context& ctx, const std::vector<int32_t>& v) {
  Tensor host = Tensor::empty(Shape{static_cast<int64_t>(v.size())}, DType::i32);
  std::copy(v.begin(), v.end(), host.data_as<int32_t>());
  return host.to(ctx.device());
}

void upload_lens(Context& ctx, KVCache& cache) {
  Tensor host = Tensor::empty(Shape{cache.batch}, DType::i32);
  std::copy(cache.lens.begin(), cache.lens.end(), host.data_as<int32_t>());
  cache.lens_dev.copy_from(host, &ctx.compute());
  ctx.compute().synchronize();  // host is freed on return
}
}  // namespace

Tensor LlamaModel::prefill(Context& ctx, KVCache& cache, const std::vector<std::vector<int32_t>>& prompts) const {
  ONN_CHECK_ARG(static_cast<int64_t>(prompts.size()) == cache.batch, "prefill: ", prompts.size(),
                " prompts for a cache of ", cache.batch, " sequences");
  std::vector<int64_t> lens;
  std::vector<int32_t> ids, pos;
  for (const auto& p : prompts) {
    ONN_CHECK_ARG(!p.empty(), "prefill: an empty prompt");
    ONN_CHECK_ARG(static_cast<int64_t>(p.size()) <= cache.max_len, "prefill: a prompt of ", p.size(),
                  " tokens does not fit a cache of ", cache.max_len);
    for (size_t i = 0; i < p.size(); ++i) {
      ONN_CHECK_ARG(p[i] >= 0 && p[i] < config_.vocab_size, "prefill: token id ", p[i], " is outside the vocabulary [0, ",
                    config_.vocab_size, ")");
      ids.push_back(p[i]);
      pos.push_back(static_cast<int32_t>(i));
    }
    lens.push_back(static_cast<int64_t>(p.size()));
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  const Tensor d_ids = device_i32(ctx, ids), d_pos = device_i32(ctx, pos);
  const AttentionSeqs seqs = packed_seqs(ctx, lens);
  const float scale = attention_scale();
  Tensor lse = Tensor::empty(Shape{n, config_.num_attention_heads}, norm_stat_dtype(dtype_), ctx.allocator());
  const Tensor h = run_blocks(ctx, d_ids, d_pos, [&](size_t l, Tensor& q, Tensor& k, Tensor& v, Tensor& out) {
    attention_forward(ctx, q, k, v, seqs, scale, out, lse);
    int64_t off = 0;
    const int64_t width = k.dim(1) * k.dim(2);
    for (int64_t b = 0; b < cache.batch; ++b) {
      const int64_t len = lens[static_cast<size_t>(b)];
      cache_rows(cache.k[l], b, 0, len).copy_from(k.reshape(Shape{n, width}).slice(off, off + len), &ctx.compute());
      cache_rows(cache.v[l], b, 0, len).copy_from(v.reshape(Shape{n, width}).slice(off, off + len), &ctx.compute());
      off += len;
    }
  });
  // The last token of each prompt.
  Tensor last = Tensor::empty(Shape{cache.batch, config_.hidden_size}, dtype_, ctx.allocator());
  int64_t off = 0;
  for (int64_t b = 0; b < cache.batch; ++b) {
    off += lens[static_cast<size_t>(b)];
    last.slice(b, b + 1).copy_from(h.slice(off - 1, off), &ctx.compute());
    cache.lens[static_cast<size_t>(b)] = static_cast<int32_t>(lens[static_cast<size_t>(b)]);
  }
  return project(ctx, last);
}

Tensor LlamaModel::decode(Context& ctx, KVCache& cache, const std::vector<int32_t>& tokens) const {
  ONN_CHECK_ARG(static_cast<int64_t>(tokens.size()) == cache.batch, "decode: ", tokens.size(),
                " tokens for a cache of ", cache.batch, " sequences");
  const int64_t B = cache.batch;
  std::vector<int32_t> pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t t = tokens[static_cast<size_t>(b)];
    ONN_CHECK_ARG(t >= 0 && t < config_.vocab_size, "decode: token id ", t, " is outside the vocabulary [0, ",
                  config_.vocab_size, ")");
    ONN_CHECK_ARG(cache.lens[static_cast<size_t>(b)] < cache.max_len, "decode: sequence ", b,
                  " has filled its cache of ", cache.max_len, " tokens");
    pos[static_cast<size_t>(b)] = cache.lens[static_cast<size_t>(b)];
  }
  const Tensor d_ids = device_i32(ctx, tokens), d_pos = device_i32(ctx, pos);
  for (auto& len : cache.lens) ++len;  // the new token is attended to as well
  upload_lens(ctx, cache);
  const float scale = attention_scale();
  const int64_t H = config_.num_attention_heads, D = config_.head_dim;
  const Tensor h = run_blocks(ctx, d_ids, d_pos, [&](size_t l, Tensor& q, Tensor& k, Tensor& v, Tensor& out) {
    const int64_t width = k.dim(1) * k.dim(2);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = cache.lens[static_cast<size_t>(b)] - 1;
      cache_rows(cache.k[l], b, row, 1).copy_from(k.reshape(Shape{B, width}).slice(b, b + 1), &ctx.compute());
      cache_rows(cache.v[l], b, row, 1).copy_from(v.reshape(Shape{B, width}).slice(b, b + 1), &ctx.compute());
    }
    Tensor out4 = out.reshape(Shape{B, 1, H, D});
    attention_decode(ctx, q.reshape(Shape{B, 1, H, D}), cache.k[l], cache.v[l], cache.lens_dev, scale, out4);
  });
  return project(ctx, h);
}

Tensor LlamaModel::logits(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs) const {
  return project(ctx, hidden_states(ctx, ids, positions, seqs));
}

double LlamaModel::loss(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                        const Tensor& labels) const {
  const Tensor h = hidden_states(ctx, ids, positions, seqs);
  Tensor loss = Tensor::empty(Shape{1}, loss_dtype(dtype_), ctx.allocator());
  if (stream_) {
    SlicedLmHeadLoss head(ctx, h, labels, config_.vocab_size, nullptr, 1024, stream_->head_granule());
    for (int64_t s = 0; s < stream_->head_slices(); ++s) {
      int64_t v0 = 0;
      const Tensor w = stream_->acquire_head(s, &v0);
      head.forward_slice(v0, w);
      stream_->release();
    }
    head.finish(loss);
  } else {
    lm_head_cross_entropy(ctx, h, weights_.lm_head, labels, loss, nullptr, nullptr);
  }
  ctx.synchronize();
  const Tensor host = loss.to(Device::cpu());
  return load_as_double(host.data(), host.dtype(), 0);
}

std::vector<std::pair<std::string, Tensor>> named_weights(const ModelConfig& cfg, const ModelWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out = {{"model.embed_tokens.weight", w.embed},
                                                     {"model.norm.weight", w.norm}};
  if (!cfg.tie_word_embeddings) out.emplace_back("lm_head.weight", w.lm_head);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto add = [&](const char* name, const Tensor& t) {
      if (t.defined()) out.emplace_back(p + name, t);
    };
    add("input_layernorm.weight", L.input_norm);
    add("post_attention_layernorm.weight", L.post_attn_norm);
    if (L.qkv.defined()) {
      add("self_attn.qkv_proj.weight", L.qkv);
    } else {
      add("self_attn.q_proj.weight", L.wq);
      add("self_attn.k_proj.weight", L.wk);
      add("self_attn.v_proj.weight", L.wv);
    }
    add("self_attn.q_proj.bias", L.bq);
    add("self_attn.k_proj.bias", L.bk);
    add("self_attn.v_proj.bias", L.bv);
    add("self_attn.o_proj.weight", L.wo);
    add("self_attn.o_proj.bias", L.bo);
    if (L.gate_up.defined()) {
      add("mlp.gate_up_proj.weight", L.gate_up);
    } else {
      add("mlp.gate_proj.weight", L.wgate);
      add("mlp.up_proj.weight", L.wup);
    }
    add("mlp.down_proj.weight", L.wdown);
  }
  return out;
}

ModelWeights weights_like(Context& ctx, const ModelConfig& cfg, const ModelWeights& w, DType dtype) {
  const auto like = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    Tensor n = Tensor::empty(t.shape(), dtype, ctx.allocator());
    n.fill_bytes(0, &ctx.compute());
    return n;
  };
  ModelWeights g;
  g.embed = like(w.embed);
  g.norm = like(w.norm);
  g.lm_head = cfg.tie_word_embeddings ? g.embed : like(w.lm_head);
  for (const LayerWeights& L : w.layers) {
    LayerWeights G;
    G.input_norm = like(L.input_norm);
    G.post_attn_norm = like(L.post_attn_norm);
    if (L.qkv.defined()) {
      G.qkv = like(L.qkv);
      const int64_t hd = L.wq.dim(0), kd = L.wk.dim(0);
      G.wq = G.qkv.slice(0, hd);
      G.wk = G.qkv.slice(hd, hd + kd);
      G.wv = G.qkv.slice(hd + kd, hd + 2 * kd);
    } else {
      G.wq = like(L.wq);
      G.wk = like(L.wk);
      G.wv = like(L.wv);
    }
    G.bq = like(L.bq);
    G.bk = like(L.bk);
    G.bv = like(L.bv);
    G.wo = like(L.wo);
    G.bo = like(L.bo);
    if (L.gate_up.defined()) {
      G.gate_up = like(L.gate_up);
      const int64_t f = L.wgate.dim(0);
      G.wgate = G.gate_up.slice(0, f);
      G.wup = G.gate_up.slice(f, 2 * f);
    } else {
      G.wgate = like(L.wgate);
      G.wup = like(L.wup);
    }
    G.wdown = like(L.wdown);
    g.layers.push_back(std::move(G));
  }
  return g;
}

Tensor sequence_positions(int64_t batch, int64_t seq_len) {
  Tensor t = Tensor::empty(Shape{batch * seq_len}, DType::i32);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < seq_len; ++i) t.data_as<int32_t>()[b * seq_len + i] = static_cast<int32_t>(i);
  return t;
}

Tensor next_token_labels(const Tensor& ids_host, int64_t batch, int64_t seq_len) {
  ONN_CHECK_ARG(ids_host.device().is_cpu() && ids_host.dtype() == DType::i32 && ids_host.numel() == batch * seq_len,
                "next_token_labels: ids must be (B*T) I32 on the CPU");
  Tensor t = Tensor::empty(Shape{batch * seq_len}, DType::i32);
  const int32_t* in = ids_host.data_as<int32_t>();
  int32_t* out = t.data_as<int32_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < seq_len; ++i)
      out[b * seq_len + i] = i + 1 < seq_len ? in[b * seq_len + i + 1] : kIgnoreIndex;
  return t;
}

}  // namespace onn
