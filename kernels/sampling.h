// Token choice from a row of logits: argmax, and sampling after temperature, top-k, top-p
// (nucleus) and min-p filtering, applied in that order as transformers' generate does.
// The CPU version is what generation uses for one row; argmax_rows also runs on CUDA.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off; keeps p >= min_p * max p
};

// Index of the largest logit (the first on ties); -1 for an empty row. NaN never wins.
int64_t argmax(std::span<const float> logits);
// The distribution sampling draws from: softmax(logits / temperature) with filtered tokens
// set to 0 and the rest renormalised. Throws InvalidArgument on a bad parameter.
std::vector<double> sampling_probs(std::span<const float> logits, const SamplingParams& p);
// A token drawn with uniform u in [0, 1) (argmax when temperature <= 0).
int64_t sample_token(std::span<const float> logits, const SamplingParams& p, double u);

// logits (N, V) -> out (N) I32: argmax of every row (the first on ties).
void argmax_rows(Context& ctx, const Tensor& logits, Tensor& out);

}  // namespace onn
