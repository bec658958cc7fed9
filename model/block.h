// One transformer block of the LLaMA family, forward and backward, the only one: generation,
// evaluation and training, resident or streamed, all run it (through model/stack.h). Pre-norm
// attention (GQA, RoPE) and a SwiGLU MLP; each projection optionally LoRA-adapted (dropout on
// the LoRA input, masks regenerated from a seed); the post-attention residual add fused into
// its RMSNorm. The forward leaves its internals in BlockActs for the backward; the backward adds
// into LoRA or full-weight gradients. A quantized base (QLoRA) is dequantized projection by
// projection just before each GEMM.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>

#include "kernels/attention.h"
#include "kernels/lora.h"
#include "model/llama.h"
#include "model/lora.h"

namespace onn {

// What receives gradients: the adapter's modules, or every model weight.
struct Gradients {
  LoraAdapter lora;                  // LoRA: F32 dA, dB laid out as the adapter (views included)
  std::optional<ModelWeights> full;  // full training: F32, the model's structure
  ModelConfig config;                // the model's: which tensors `full` holds (biases, fusions, a tied head)
};

// One block's forward internals over N rows, kept for its backward. A caller that needs no
// backward passes one BlockActs to every layer: tensors of the right shape are reused.
struct BlockActs {
  Tensor h1, rstd1;  // (N, C), (N): input norm
  Tensor q, k, v;    // (N, H, D), (N, KVH, D), (N, KVH, D); q and k after RoPE
  Tensor att, lse;   // (N, H, D), (N, H)
  Tensor x2;         // (N, C): the residual after attention
  Tensor h2, rstd2;  // (N, C), (N): post-attention norm
  Tensor g, u, s;    // (N, F): gate, up, silu(gate) * up
  std::array<Tensor, kProjections> xa;  // (N, R) per adapted projection
};

// Attention of layer l over q (N, H, D), k and v (N, KVH, D) after RoPE into out (N, H, D), with
// lse (N, H) for a backward. Generation's KV cache brings its own; the default is
// attention_forward over the block's packed sequences.
using AttentionFn = std::function<void(size_t l, Tensor& q, Tensor& k, Tensor& v, Tensor& out, Tensor& lse)>;

// What every layer of one micro-batch shares.
struct BlockInput {
  const Tensor* positions = nullptr;   // (N) I32, restarting per sequence
  const AttentionSeqs* seqs = nullptr;  // the packing (the default attention and the backward)
  const AttentionFn* attend = nullptr;  // null: attention_forward over seqs
  const LoraAdapter* lora = nullptr;    // applied in the forward; null: no adapter
  bool dropout = true;                  // LoRA dropout (off for evaluation)
  uint64_t dropout_seed = 0;            // masks from (seed, layer, module)
};

class Block {
 public:
  // weight_scratch: where a quantized base's projections are dequantized, shared by every block of
  // a pass (their GEMMs are ordered on one stream); allocated on first use.
  Block(Context& ctx, const LlamaModel& model, int64_t rows, const BlockInput& in, Tensor& weight_scratch);

  int64_t rows() const { return n_; }
  Tensor make(const Shape& s) const;  // the compute dtype, on the context's allocator
  Tensor stat(const Shape& s) const;  // norm_stat_dtype
  // x (N, C) -> out (N, C), a fresh tensor or one reused from an earlier layer (never x).
  void forward(size_t l, const LayerWeights& w, const Tensor& x, BlockActs& a, Tensor& out) const;
  // dx (N, C): the gradient at the layer's output in, at its input out (in place). need_dx
  // false: the input gradient is not needed (the lowest trained layer of LoRA).
  void backward(size_t l, const LayerWeights& w, const Tensor& x, const BlockActs& a, Tensor& dx, bool need_dx,
                Gradients& g) const;
  // dx += the RMSNorm backward of y = norm(x); the weight's gradient added into dweight (null:
  // not trained).
  void norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, Tensor& dx,
                     Tensor* dweight) const;

 private:
  bool adapted(size_t l, Projection p) const;
  LoraConfig lora_config(size_t l, Projection p) const;
  void project(size_t l, Projection p, const Tensor& x, const LayerWeights& w, Tensor& y, BlockActs& a) const;
  void project_backward(size_t l, Projection p, const Tensor& x, const LayerWeights& w, const Tensor& dy, Tensor* dx,
                        bool acc_dx, const BlockActs& a, Gradients& g) const;
  void ensure(Tensor& t, const Shape& s, bool statistic = false) const;
  // Projection p's weight in the compute dtype: the dense tensor, or a quantized base's
  // dequantized into the pass's scratch just before its GEMM (forward, and again for dX); valid
  // until the next call.
  Tensor weight(const LayerWeights& w, Projection p) const;

  Context& ctx_;
  const LlamaModel& model_;
  const ModelConfig& c_;
  int64_t n_;
  BlockInput in_;
  float scale_;
  Tensor* scratch_;  // the pass's: a quantized base's dequantized projection, the largest one's size
};

}  // namespace onn
