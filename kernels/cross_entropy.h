// Cross-entropy fused with softmax, mean over the tokens whose label is not ignore_index.
// The gradient overwrites the logits in place, so probabilities never take memory of their
// own; each row is processed in vocabulary chunks (an online log-sum-exp), so any V works.
// The fused LM head + cross-entropy runs the output projection on a chunk of tokens at a
// time: the full (N, V) logits never exist.
#pragma once

#include <cstdint>

#include "kernels/defaults.h"
#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

inline constexpr int32_t kIgnoreIndex = -100;

// The dtype of losses and counts for logits of dtype t: F64 for F64, else F32.
DType loss_dtype(DType t);

// valid (1) of loss_dtype: the number of labels (N) I32 that are not ignore_index, kept on
// the device so the gradient scale 1 / valid needs no host round trip.
void count_valid_labels(Context& ctx, const Tensor& labels, int32_t ignore_index, Tensor& valid);

struct CrossEntropyOptions {
  int32_t ignore_index = kIgnoreIndex;
  bool compute_grad = true;  // false: logits are left as they are (evaluation)
};
// logits (N, V), labels (N) I32, valid (1) from count_valid_labels over the whole batch;
// token_loss (N) of loss_dtype = logsumexp(row) - row[label] (0 where ignored). With
// compute_grad, logits become (softmax - onehot) / valid (zero rows where ignored). A label
// outside [0, V) that is not ignore_index: InvalidArgument on the CPU, a NaN loss on CUDA.
void cross_entropy_forward_backward(Context& ctx, Tensor& logits, const Tensor& labels, const Tensor& valid,
                                    Tensor& token_loss, const CrossEntropyOptions& opt = {});
// loss (1) = sum(token_loss) / max(valid, 1), summed in a fixed order.
void mean_loss(Context& ctx, const Tensor& token_loss, const Tensor& valid, Tensor& loss);

struct LmHeadLossOptions {
  int64_t chunk_tokens = kLmHeadChunkTokens;  // tokens per projection: the (chunk, V) logits buffer
  int32_t ignore_index = kIgnoreIndex;
  bool accumulate_dw = false;
  // (1) of loss_dtype on the device: the count the loss and gradients are divided by, e.g. the
  // whole optimizer step's valid tokens across gradient accumulation (the loss returned is
  // then this call's share of the step's mean). Null: this call's own count.
  const Tensor* valid = nullptr;
};
// h (N, C), w (V, C) (h's dtype, or BF16 under cpu_bf16_weights), labels (N) -> loss (1) of
// loss_dtype(h). dh (N, C) (written) and dw (V, C) (h's dtype or F32; written, or added to with
// accumulate_dw) may be null.
void lm_head_cross_entropy(Context& ctx, const Tensor& h, const Tensor& w, const Tensor& labels, Tensor& loss,
                           Tensor* dh, Tensor* dw, const LmHeadLossOptions& opt = {});

// The LM head + cross-entropy with the head's weight arriving a slice of vocabulary rows at a
// time (the low-VRAM path streams it through the chunk buffers). Logits are produced per
// (token chunk, vocabulary granule): the forward merges each granule's row (max, sum of
// exponentials) into a running log-sum-exp in granule order, the backward recomputes the
// logits, turns them into (softmax - onehot) / valid and adds dlogits @ W into dh in
// descending granule order. The result therefore has the same bits wherever the slice
// boundaries fall (any multiple of the granule); it differs from lm_head_cross_entropy only by
// rounding. Use: forward_slice over the slices in ascending order, finish, then (for
// gradients) backward_slice over them in descending order.
class SlicedLmHeadLoss {
 public:
  // h (N, C) and labels (N) stay referenced until the last call. valid: as
  // LmHeadLossOptions::valid (null: this call's own count).
  SlicedLmHeadLoss(Context& ctx, const Tensor& h, const Tensor& labels, int64_t vocab, const Tensor* valid = nullptr,
                   int64_t chunk_tokens = kLmHeadChunkTokens, int64_t granule = kLmHeadGranule,
                   int32_t ignore_index = kIgnoreIndex);
  int64_t granule() const { return granule_; }
  // w (rows, C): vocabulary rows [v0, v0 + rows). v0 must follow the previous slice, and rows
  // be a multiple of the granule unless the slice ends the vocabulary.
  void forward_slice(int64_t v0, const Tensor& w);
  // loss (1) of loss_dtype(h): the mean over the valid labels (as lm_head_cross_entropy).
  void finish(Tensor& loss);
  // dh (N, C), h's dtype: written by the first call (the slice that ends the vocabulary), then
  // added to; slices in descending order.
  void backward_slice(int64_t v0, const Tensor& w, Tensor& dh);

 private:
  void check_slice(const char* op, int64_t v0, const Tensor& w) const;
  Context& ctx_;
  Tensor scratch() const;
  Tensor h_, labels_, valid_, m_, l_, target_;
  int64_t vocab_, chunk_, granule_, next_v0_ = 0, back_end_ = -1;
  int32_t ignore_;
};

// The per-granule steps of SlicedLmHeadLoss. logits (T, G) hold vocabulary columns
// [v0, v0 + G); m, l, target (T) of loss_dtype(logits), m starting at -inf and l at 0.
void vocab_chunk_stats(Context& ctx, const Tensor& logits, const Tensor& labels, int64_t v0, Tensor& m, Tensor& l,
                       Tensor& target, int32_t ignore_index);
// logits become (exp(x - m - log l) - onehot) / max(valid, 1), zero rows where ignored.
void vocab_chunk_grad(Context& ctx, Tensor& logits, const Tensor& labels, int64_t v0, const Tensor& m, const Tensor& l,
                      const Tensor& valid, int32_t ignore_index);
// token_loss (T) = m + log(l) - target, 0 where ignored.
void vocab_chunk_loss(Context& ctx, const Tensor& labels, const Tensor& m, const Tensor& l, const Tensor& target,
                      Tensor& token_loss, int32_t ignore_index);

}  // namespace onn
