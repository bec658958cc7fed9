// The LLaMA-family transformer (Llama, Mistral, Qwen2, Phi-3): weights by their Hugging Face
// names, converted to the compute dtype (F32 on the CPU, BF16 on CUDA), on the device or in
// host memory for layer streaming; and the forward for generation and evaluation over packed
// sequences (model/inference.cpp, through model/stack.h's one layer loop).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/quant.h"
#include "model/config.h"
#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

class WeightFeed;

struct LayerWeights {
  Tensor input_norm;      // (C)
  Tensor post_attn_norm;  // (C)
  Tensor wq, wk, wv;      // (H*D, C), (KVH*D, C), (KVH*D, C); row views of qkv_proj for Phi-3
  Tensor bq, bk, bv;      // (H*D), (KVH*D), (KVH*D) or undefined
  Tensor wo;              // (C, H*D)
  Tensor bo;              // (C) or undefined
  Tensor wgate, wup;      // (F, C) each; row views of gate_up_proj for Phi-3
  Tensor wdown;           // (C, F)
  Tensor qkv, gate_up;    // (H*D + 2*KVH*D, C), (2F, C): Phi-3's fused originals, else undefined
  // A quantized base (frozen, kernels/quant.h): each projection's weight in its quantized form,
  // the Tensor field of that projection then undefined; row views of the fused originals as above.
  QuantTensor qwq, qwk, qwv, qwo, qwgate, qwup, qwdown, qqkv, qgate_up;
};

struct ModelWeights {
  Tensor embed;    // (V, C)
  Tensor lm_head;  // (V, C): embed itself when tie_word_embeddings
  Tensor norm;     // (C)
  std::vector<LayerWeights> layers;
};

// The seven linear projections of a block, in the order the CLI names them (the LoRA targets).
enum class Projection : int { q, k, v, o, gate, up, down };
inline constexpr int kProjections = 7;
// Projection p's weight (out, in) and bias ((out), or undefined) in a layer.
Tensor LayerWeights::*projection_weight(Projection p);
Tensor LayerWeights::*projection_bias(Projection p);  // null: the projection never has one
QuantTensor LayerWeights::*projection_quant(Projection p);

// One tensor of a block as a Hugging Face folder stores it: its name within the layer, its
// shape, and the field of LayerWeights that holds it. A fused original (Phi-3's qkv_proj,
// gate_up_proj) is one entry; bind_fused_views cuts its per-projection row views.
struct LayerTensor {
  const char* name;  // "self_attn.q_proj.weight"
  Shape shape;
  Tensor LayerWeights::*field;
  // A projection weight's quantized form (a quantized base holds it there instead); null for
  // norms and biases, which stay dense.
  QuantTensor LayerWeights::*quant = nullptr;
};
// Every tensor of a layer of `c`, in the one order the loader, the writers, the layer streamer
// and the planner share.
std::vector<LayerTensor> layer_tensors(const ModelConfig& c);
// One layer's weight bytes as loaded: dense tensors in `dtype`, the projection weights in
// `quant`'s layout when it is not none.
uint64_t layer_bytes(const ModelConfig& c, DType dtype, QuantFormat quant);
// Every projection weight of the model (fused originals whole) by HF name, with its shape: the
// tensors a quantized base holds quantized.
std::map<std::string, Shape> projection_weights(const ModelConfig& c);
// The elements of the largest projection weight of a layer (a fused original whole): the
// scratch a quantized base dequantizes into.
int64_t largest_projection(const ModelConfig& c);
// Every weight's element count (the LM head once when tied).
int64_t parameter_count(const ModelConfig& c);
// The tensors a layer holds for spec, in one order: the dense tensor, or the quantized form's
// parts (the streamer copies them; layer_from_parts rebinds a copy).
std::vector<Tensor> layer_parts(const ModelConfig& c, const LayerWeights& w);
// A layer like `like` over parts[next...] (the same order), fused views bound; advances next.
LayerWeights layer_from_parts(const ModelConfig& c, const LayerWeights& like, const std::vector<Tensor>& parts,
                              size_t& next);
// wq, wk, wv as row views of qkv and wgate, wup of gate_up where c fuses them (the quantized
// forms likewise).
void bind_fused_views(const ModelConfig& c, LayerWeights& w);
// "model.layers.L."
std::string layer_prefix(int64_t l);

// Every tensor of `w` by its Hugging Face name (fused tensors whole, a tied head once), in
// the layout config.json implies.
std::vector<std::pair<std::string, Tensor>> named_weights(const ModelConfig& cfg, const ModelWeights& w);
// The same structure with fresh tensors of `dtype` on ctx's device (zeroed): gradients or
// fp32 master copies. Fused tensors are allocated whole, with the per-projection row views.
ModelWeights weights_like(Context& ctx, const ModelConfig& cfg, const ModelWeights& w, DType dtype);

// Keys and values of every layer for B sequences of up to Tmax tokens, on the device, in the
// model's compute dtype (bf16 for a model loaded with bf16 storage, on the CPU).
struct KVCache {
  int64_t batch = 0, max_len = 0;
  std::vector<Tensor> k, v;   // per layer (B, Tmax, KVH, D)
  std::vector<int32_t> lens;  // tokens cached per sequence
  Tensor lens_dev;            // (B) I32 on the device: lens, refreshed before each use
};

// The default compute dtype of a device: BF16 on CUDA, F32 on the CPU.
DType default_compute_dtype(Device device);

class LlamaModel {
 public:
  // A model folder (config.json + model.safetensors or a sharded index). A missing tensor or
  // one whose shape differs from what config.json implies is a FormatError naming it.
  //
  // Projection weights stored quantized (a bitsandbytes 4-bit folder) load as they are;
  // `quantize` quantizes dense ones while loading, one tensor at a time from the mapped file
  // (host memory holds the quantized model plus one tensor). A quantized base is frozen: it
  // trains LoRA adapters only.
  static LlamaModel load(Context& ctx, const std::string& dir, std::optional<DType> compute = std::nullopt,
                         QuantFormat quantize = QuantFormat::none);

  // The weights in host memory (pinned on CUDA, in the compute dtype) for the layer-streaming
  // path (model/streaming.h); only the RoPE table is on ctx's device. Its forward runs through
  // a StreamedWeights made from it, passed as the feed of each call below.
  static LlamaModel load_to_host(Context& ctx, const std::string& dir, std::optional<DType> compute = std::nullopt,
                                 QuantFormat quantize = QuantFormat::none);
  // A model of config's shapes in host memory, as load_to_host, with no file behind it: every
  // tensor views one buffer the size of the largest, never written (address space, not
  // memory). Its values are meaningless: it is for a rehearsal (Context::start_rehearsal) of
  // the streamed path at a real model's shapes.
  static LlamaModel placeholder_on_host(Context& ctx, const ModelConfig& config, DType compute);
  bool on_host() const { return on_host_; }
  // The format of the projection weights (none: a dense base).
  QuantFormat quant_format() const { return quant_; }

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // For full training: the optimizer writes the compute weights in place.
  ModelWeights& mutable_weights() { return weights_; }
  // Projection p of layer l (with a fused original, the whole original) dequantized into a
  // dense weight in the compute dtype, where it is quantized: for merging an adapter into it.
  void make_dense(Context& ctx, size_t l, Projection p);
  DType dtype() const { return dtype_; }
  const Tensor& inv_freq() const { return inv_freq_; }  // (R/2) RoPE frequencies on the device
  float attention_scale() const;                         // 1 / sqrt(D)

  // The forward below runs over `feed`: null is the model's own weights (resident), a
  // StreamedWeights made from a model loaded to the host streams them.
  //
  // ids (N) I32, positions (N) I32 (restarting per sequence), seqs: the packing of the N
  // tokens. Returns the final-norm hidden states (N, C).
  Tensor hidden_states(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                       WeightFeed* feed = nullptr) const;
  // (N, V) logits in the compute dtype.
  Tensor logits(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
                WeightFeed* feed = nullptr) const;
  // Mean cross-entropy of labels (N) I32 (-100 ignored) against the logits, through the chunked
  // LM head; returned on the host.
  double loss(Context& ctx, const Tensor& ids, const Tensor& positions, const AttentionSeqs& seqs,
              const Tensor& labels, WeightFeed* feed = nullptr) const;

  // A preallocated cache for `batch` sequences of at most max_len tokens (checked against the
  // config's context limits).
  KVCache make_cache(Context& ctx, int64_t batch, int64_t max_len) const;
  // Runs every prompt (one per cache sequence, each non-empty) through the model in one packed
  // forward, fills the cache and returns the logits of each prompt's last token, (B, V).
  Tensor prefill(Context& ctx, KVCache& cache, const std::vector<std::vector<int32_t>>& prompts,
                 WeightFeed* feed = nullptr) const;
  // One new token per sequence: appends its keys and values and returns its logits, (B, V).
  Tensor decode(Context& ctx, KVCache& cache, const std::vector<int32_t>& tokens, WeightFeed* feed = nullptr) const;

 private:
  static LlamaModel load_into(Context& ctx, Context& home, const std::string& dir, DType compute,
                              QuantFormat quantize);
  // The model of config with each weight from source(HF name, shape); a projection weight from
  // quant_source first, when given (an undefined result: dense from source).
  using WeightSource = std::function<Tensor(const std::string& name, const Shape& shape)>;
  using QuantSource = std::function<QuantTensor(const std::string& name, const Shape& shape)>;
  static LlamaModel assemble(Context& ctx, const ModelConfig& config, DType compute, const WeightSource& source,
                             const QuantSource& quant_source = nullptr);

  ModelConfig config_;
  ModelWeights weights_;
  bool on_host_ = false;
  DType dtype_ = DType::f32;
  QuantFormat quant_ = QuantFormat::none;
  Tensor inv_freq_;  // (R/2) F32 on the device
};

// Positions and next-token labels for B sequences of T tokens laid out back to back (ids
// (B*T) on any device): positions 0..T-1 per sequence, labels[t] = ids[t+1] within a
// sequence and -100 at each sequence's last token. Host tensors.
Tensor sequence_positions(int64_t batch, int64_t seq_len);
Tensor next_token_labels(const Tensor& ids_host, int64_t batch, int64_t seq_len);

}  // namespace onn
