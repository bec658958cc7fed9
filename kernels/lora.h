// LoRA linear: y = x W^T (+ bias) + scale * (drop(x) A^T) B^T with W frozen, as PEFT
// computes it (dropout on the input of the LoRA branch only; scale = alpha / r, or
// alpha / sqrt(r) for rsLoRA). The scale and the add into y ride on the GEMM's alpha and beta,
// so the (N, out) LoRA product never takes its own memory. The dropout mask is regenerated
// from (seed, element index) in the backward, never stored.
#pragma once

#include <cstdint>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

struct LoraConfig {
  float scale = 1.0f;    // alpha / r
  float dropout = 0.0f;  // probability in [0, 1)
  uint64_t seed = 0;     // dropout mask seed: a fresh one per step and layer
};

// x (N, in), w (out, in), bias (out) or null, a (R, in), b (out, R), one dtype; y (N, out);
// xa (N, R): drop(x) A^T, saved for the backward.
void lora_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& a,
                  const Tensor& b, const LoraConfig& cfg, Tensor& y, Tensor& xa);

struct LoraGrads {
  Tensor* dx = nullptr;  // (N, in), x's dtype; null when x needs no gradient
  bool accumulate_dx = false;
  Tensor* da = nullptr;  // (R, in), x's dtype or F32
  Tensor* db = nullptr;  // (out, R), da's dtype
  bool accumulate_ab = false;  // gradient accumulation across micro-batches
};
// dy (N, out); x, w, a, b, xa as in the forward, with the same cfg (seed included).
void lora_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b,
                   const Tensor& xa, const Tensor& dy, const LoraConfig& cfg, const LoraGrads& g);

}  // namespace onn
