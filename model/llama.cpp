// The LLaMA-family model's weights: loading by HF names (one list of a layer's tensors), their
// names for writers, and gradient-shaped copies. The forward is in model/inference.cpp.
#include "model/llama.h"

#include <algorithm>
#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/rope.h"
#include "model/quantized.h"
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

  // A projection weight stored in bitsandbytes' layout as it is, or a dense one quantized to
  // `quantize` (from the mapped file, on the CPU), with its parts in the home context's memory;
  // undefined: dense.
  QuantTensor get_quantized(const std::string& name, const Shape& want, QuantFormat quantize) const {
    QuantTensor q;
    if (has_bnb_nf4(st_, name)) {
      q = read_bnb_nf4(st_, name, want);  // views of the mapped file: copied below
    } else if (quantize != QuantFormat::none && has(name)) {
      const Tensor raw = st_.tensor(name);
      if (!(raw.shape() == want) || !dtype_is_float(raw.dtype()))
        return q;  // get() names what is wrong with it
      // Host memory (the CPU's, or pinned for streaming) takes the quantizer's output as it is.
      if (ctx_.device().is_cpu()) return quantize_weight(raw, quantize, ctx_.allocator());
      q = quantize_weight(raw, quantize, cpu_allocator());
    } else {
      return q;
    }
    size_t next = 0;
    std::vector<Tensor> placed;
    for (const Tensor& t : q.parts()) {
      Tensor h = Tensor::empty(t.shape(), t.dtype(), ctx_.allocator());
      h.copy_from(t);
      placed.push_back(std::move(h));
    }
    return q.with_parts(placed, next);
  }

 private:
  QuantTensor quantize_weight(const Tensor& raw, QuantFormat format, Allocator& alloc) const {
    try {
      return quantize(raw, format, /*double_quant=*/true, alloc);
    } catch (const InvalidArgument& e) {
      throw FormatError(st_.source() + ": cannot quantize tensor: " + e.what());
    }
  }

  Context& ctx_;
  const SafetensorsModel& st_;
  DType dtype_;
};


}  // namespace

LlamaModel LlamaModel::load(Context& ctx, const std::string& dir, std::optional<DType> compute,
                            QuantFormat quantize) {
  return load_into(ctx, ctx, dir, compute.value_or(default_compute_dtype(ctx.device())), quantize);
}

LlamaModel LlamaModel::load_to_host(Context& ctx, const std::string& dir, std::optional<DType> compute,
                                    QuantFormat quantize) {
  Context host(Device::cpu(), ctx.device().is_cuda() ? static_cast<Allocator&>(pinned_allocator()) : cpu_allocator(),
               0);
  LlamaModel m = load_into(ctx, host, dir, compute.value_or(default_compute_dtype(ctx.device())), quantize);
  m.on_host_ = true;
  return m;
}

LlamaModel LlamaModel::load_into(Context& ctx, Context& home, const std::string& dir, DType compute,
                                 QuantFormat quantize) {
  const ModelConfig config = load_model_config(dir);
  const SafetensorsModel st = SafetensorsModel::open(dir);
  const WeightLoader w(home, st, compute);
  if (quantize == QuantFormat::bf16 && !ctx.device().is_cpu())
    throw InvalidArgument("--quantize bf16 is the CPU backend's storage; on " + ctx.device().str() +
                          " the projections compute in bf16 already");
  if (config.stored_quant != QuantFormat::none && quantize != QuantFormat::none && quantize != config.stored_quant)
    throw InvalidArgument(dir + ": the folder is stored as " + std::string(quant_format_name(config.stored_quant)) +
                          "; --quantize " + std::string(quant_format_name(quantize)) +
                          " applies to unquantized folders");
  // Each tensor is copied or converted out of the mapped file, whose pages are then given back:
  // a bf16 or quantized load does not keep the file in memory beside its result.
  return assemble(
      ctx, config, compute,
      [&](const std::string& name, const Shape& want) {
        Tensor t = w.get(name, want);
        st.release(name);
        return t;
      },
      [&](const std::string& name, const Shape& want) {
        QuantTensor q = w.get_quantized(name, want, quantize);
        if (q.defined()) st.release(name);
        return q;
      });
}

LlamaModel LlamaModel::placeholder_on_host(Context& ctx, const ModelConfig& config, DType compute) {
  int64_t largest = config.vocab_size * config.hidden_size;
  for (const LayerTensor& t : layer_tensors(config)) largest = std::max(largest, t.shape.numel());
  ONN_CHECK_ARG(largest > 0, "placeholder model: empty shapes");
  // One buffer for every tensor; its pages are never written, so it costs address space only.
  const Tensor shared = Tensor::empty(Shape{largest}, compute, cpu_allocator());
  LlamaModel m = assemble(ctx, config, compute, [&](const std::string&, const Shape& want) {
    return shared.view(0, want, compute);
  });
  m.on_host_ = true;
  return m;
}

LlamaModel LlamaModel::assemble(Context& ctx, const ModelConfig& config, DType compute, const WeightSource& source,
                                const QuantSource& quant_source) {
  LlamaModel m;
  m.config_ = config;
  m.dtype_ = compute;
  const ModelConfig& c = m.config_;
  const int64_t C = c.hidden_size, V = c.vocab_size;
  m.weights_.embed = source("model.embed_tokens.weight", Shape{V, C});
  m.weights_.norm = source("model.norm.weight", Shape{C});
  if (c.tie_word_embeddings) {
    m.weights_.lm_head = m.weights_.embed;
  } else {
    m.weights_.lm_head = source("lm_head.weight", Shape{V, C});
  }
  const std::vector<LayerTensor> specs = layer_tensors(c);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights L;
    for (const LayerTensor& t : specs) {
      const std::string name = layer_prefix(l) + t.name;
      if (t.quant && quant_source) {
        QuantTensor q = quant_source(name, t.shape);
        if (q.defined()) {
          if (m.quant_ != QuantFormat::none && m.quant_ != q.format)
            throw FormatError(name + ": stored as " + std::string(quant_format_name(q.format)) +
                              " where earlier weights are " + std::string(quant_format_name(m.quant_)));
          m.quant_ = q.format;
          L.*t.quant = std::move(q);
          continue;
        }
      }
      L.*t.field = source(name, t.shape);
    }
    bind_fused_views(c, L);
    m.weights_.layers.push_back(std::move(L));
  }
  m.inv_freq_ = rope_inv_freq_tensor(ctx, c.rope, m.dtype_ == DType::f64 ? DType::f64 : DType::f32);
  return m;
}

void LlamaModel::make_dense(Context& ctx, size_t l, Projection p) {
  LayerWeights& w = weights_.layers.at(l);
  const void* held = (w.*projection_quant(p)).data.defined() ? (w.*projection_quant(p)).data.data() : nullptr;
  if (!held) return;
  // The stored tensor p's weight is (a row view of): dequantized whole, then every projection
  // that viewed it rebound to the dense rows.
  for (const LayerTensor& t : layer_tensors(config_)) {
    if (!t.quant || !(w.*t.quant).defined() || (w.*t.quant).data.data() != held) continue;
    Tensor dense = Tensor::empty(t.shape, dtype_, ctx.allocator());
    dequantize(ctx, w.*t.quant, dense);
    w.*t.field = dense;
    w.*t.quant = QuantTensor();
  }
  for (int i = 0; i < kProjections; ++i) {
    QuantTensor& v = w.*projection_quant(static_cast<Projection>(i));
    if (v.defined() && v.data.data() == held) v = QuantTensor();
  }
  bind_fused_views(config_, w);
  ctx.synchronize();
}

float LlamaModel::attention_scale() const {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.head_dim)));
}

KVCache LlamaModel::make_cache(Context& ctx, int64_t batch, int64_t max_len) const {
  ONN_CHECK_ARG(batch >= 1 && max_len >= 1, "KV cache: batch and max_len must be positive, got ", batch, " and ",
                max_len);
  check_context_length(config_, max_len, "KV cache");
  KVCache cache;
  cache.batch = batch;
  cache.max_len = max_len;
  const Shape s{batch, max_len, config_.num_key_value_heads, config_.head_dim};
  // bf16 storage (the CPU backend) covers the cache too: half the bytes each decode step reads.
  const DType dtype = quant_ == QuantFormat::bf16 ? DType::bf16 : dtype_;
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    cache.k.push_back(Tensor::empty(s, dtype, ctx.allocator()));
    cache.v.push_back(Tensor::empty(s, dtype, ctx.allocator()));
  }
  cache.lens.assign(static_cast<size_t>(batch), 0);
  cache.lens_dev = Tensor::empty(Shape{batch}, DType::i32, ctx.allocator());
  return cache;
}

Tensor LayerWeights::*projection_weight(Projection p) {
  static constexpr Tensor LayerWeights::*kWeights[kProjections] = {
      &LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo,
      &LayerWeights::wgate, &LayerWeights::wup, &LayerWeights::wdown};
  return kWeights[static_cast<int>(p)];
}

QuantTensor LayerWeights::*projection_quant(Projection p) {
  static constexpr QuantTensor LayerWeights::*kQuant[kProjections] = {
      &LayerWeights::qwq, &LayerWeights::qwk, &LayerWeights::qwv, &LayerWeights::qwo,
      &LayerWeights::qwgate, &LayerWeights::qwup, &LayerWeights::qwdown};
  return kQuant[static_cast<int>(p)];
}

Tensor LayerWeights::*projection_bias(Projection p) {
  static constexpr Tensor LayerWeights::*kBiases[kProjections] = {
      &LayerWeights::bq, &LayerWeights::bk, &LayerWeights::bv, &LayerWeights::bo, nullptr, nullptr, nullptr};
  return kBiases[static_cast<int>(p)];
}

std::vector<LayerTensor> layer_tensors(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.num_attention_heads * c.head_dim,
                KD = c.num_key_value_heads * c.head_dim;
  using W = LayerWeights;
  std::vector<LayerTensor> t = {{"input_layernorm.weight", Shape{C}, &W::input_norm},
                                {"post_attention_layernorm.weight", Shape{C}, &W::post_attn_norm}};
  if (c.fused_qkv) {
    t.push_back({"self_attn.qkv_proj.weight", Shape{HD + 2 * KD, C}, &W::qkv, &W::qqkv});
  } else {
    t.insert(t.end(), {{"self_attn.q_proj.weight", Shape{HD, C}, &W::wq, &W::qwq},
                       {"self_attn.k_proj.weight", Shape{KD, C}, &W::wk, &W::qwk},
                       {"self_attn.v_proj.weight", Shape{KD, C}, &W::wv, &W::qwv}});
  }
  if (c.attention_bias)
    t.insert(t.end(), {{"self_attn.q_proj.bias", Shape{HD}, &W::bq},
                       {"self_attn.k_proj.bias", Shape{KD}, &W::bk},
                       {"self_attn.v_proj.bias", Shape{KD}, &W::bv}});
  t.push_back({"self_attn.o_proj.weight", Shape{C, HD}, &W::wo, &W::qwo});
  if (c.o_bias) t.push_back({"self_attn.o_proj.bias", Shape{C}, &W::bo});
  if (c.fused_gate_up) {
    t.push_back({"mlp.gate_up_proj.weight", Shape{2 * F, C}, &W::gate_up, &W::qgate_up});
  } else {
    t.insert(t.end(), {{"mlp.gate_proj.weight", Shape{F, C}, &W::wgate, &W::qwgate},
                       {"mlp.up_proj.weight", Shape{F, C}, &W::wup, &W::qwup}});
  }
  t.push_back({"mlp.down_proj.weight", Shape{C, F}, &W::wdown, &W::qwdown});
  return t;
}

uint64_t layer_bytes(const ModelConfig& c, DType dtype, QuantFormat quant) {
  uint64_t bytes = 0;
  for (const LayerTensor& t : layer_tensors(c))
    bytes += t.quant && quant != QuantFormat::none
                 ? quantized_bytes(t.shape[0], t.shape[1], quant)
                 : static_cast<uint64_t>(t.shape.numel()) * dtype_size(dtype);
  return bytes;
}

std::map<std::string, Shape> projection_weights(const ModelConfig& c) {
  std::map<std::string, Shape> w;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const LayerTensor& t : layer_tensors(c))
      if (t.quant) w[layer_prefix(l) + t.name] = t.shape;
  return w;
}

int64_t largest_projection(const ModelConfig& c) {
  int64_t n = 0;
  for (const LayerTensor& t : layer_tensors(c))
    if (t.quant) n = std::max(n, t.shape.numel());
  return n;
}

int64_t parameter_count(const ModelConfig& c) {
  int64_t n = c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size;
  for (const LayerTensor& t : layer_tensors(c)) n += t.shape.numel() * c.num_hidden_layers;
  return n;
}

std::vector<Tensor> layer_parts(const ModelConfig& c, const LayerWeights& w) {
  std::vector<Tensor> parts;
  for (const LayerTensor& spec : layer_tensors(c)) {
    if (spec.quant && (w.*spec.quant).defined()) {
      for (const Tensor& t : (w.*spec.quant).parts()) parts.push_back(t);
    } else {
      parts.push_back(w.*spec.field);
    }
  }
  return parts;
}

LayerWeights layer_from_parts(const ModelConfig& c, const LayerWeights& like, const std::vector<Tensor>& parts,
                              size_t& next) {
  LayerWeights w;
  for (const LayerTensor& spec : layer_tensors(c)) {
    if (spec.quant && (like.*spec.quant).defined())
      w.*spec.quant = (like.*spec.quant).with_parts(parts, next);
    else
      w.*spec.field = parts.at(next++);
  }
  bind_fused_views(c, w);
  return w;
}

void bind_fused_views(const ModelConfig& c, LayerWeights& w) {
  const int64_t HD = c.num_attention_heads * c.head_dim, KD = c.num_key_value_heads * c.head_dim,
                F = c.intermediate_size;
  if (c.fused_qkv && w.qkv.defined()) {
    w.wq = w.qkv.slice(0, HD);
    w.wk = w.qkv.slice(HD, HD + KD);
    w.wv = w.qkv.slice(HD + KD, HD + 2 * KD);
  }
  if (c.fused_qkv && w.qqkv.defined()) {
    w.qwq = w.qqkv.row_slice(0, HD);
    w.qwk = w.qqkv.row_slice(HD, HD + KD);
    w.qwv = w.qqkv.row_slice(HD + KD, HD + 2 * KD);
  }
  if (c.fused_gate_up && w.gate_up.defined()) {
    w.wgate = w.gate_up.slice(0, F);
    w.wup = w.gate_up.slice(F, 2 * F);
  }
  if (c.fused_gate_up && w.qgate_up.defined()) {
    w.qwgate = w.qgate_up.row_slice(0, F);
    w.qwup = w.qgate_up.row_slice(F, 2 * F);
  }
}

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

std::vector<std::pair<std::string, Tensor>> named_weights(const ModelConfig& cfg, const ModelWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out = {{"model.embed_tokens.weight", w.embed},
                                                     {"model.norm.weight", w.norm}};
  if (!cfg.tie_word_embeddings) out.emplace_back("lm_head.weight", w.lm_head);
  const std::vector<LayerTensor> specs = layer_tensors(cfg);
  for (size_t l = 0; l < w.layers.size(); ++l)
    for (const LayerTensor& t : specs) out.emplace_back(layer_prefix(static_cast<int64_t>(l)) + t.name, w.layers[l].*t.field);
  return out;
}

ModelWeights weights_like(Context& ctx, const ModelConfig& cfg, const ModelWeights& w, DType dtype) {
  const auto like = [&](const Tensor& t) {
    Tensor n = Tensor::empty(t.shape(), dtype, ctx.allocator());
    n.fill_bytes(0, &ctx.compute());
    return n;
  };
  ModelWeights g;
  g.embed = like(w.embed);
  g.norm = like(w.norm);
  g.lm_head = cfg.tie_word_embeddings ? g.embed : like(w.lm_head);
  const std::vector<LayerTensor> specs = layer_tensors(cfg);
  for (const LayerWeights& L : w.layers) {
    LayerWeights G;
    for (const LayerTensor& t : specs) G.*t.field = like(L.*t.field);
    bind_fused_views(cfg, G);
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
