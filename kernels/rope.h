// Rotary position embedding, Hugging Face convention: within the rotary dims R, element i
// pairs with i + R/2 (rotate_half), so HF checkpoints and PEFT adapters need no permutation.
// Applied in place to q or k laid out (N, heads, D) with one position per token, so decoding
// at an offset and packed documents whose positions restart both work.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/context.h"
#include "runtime/tensor.h"

namespace onn {

struct RopeScaling {
  enum class Type { none, linear, llama3 };
  Type type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct RopeConfig {
  int64_t head_dim = 0;                // D
  double theta = 10000.0;              // rope_theta
  double partial_rotary_factor = 1.0;  // R = int(D * factor), rounded down to even
  RopeScaling scaling;
};

// R, the number of rotated dims (even, <= D). Throws InvalidArgument for a bad config.
int64_t rope_rotary_dims(const RopeConfig& cfg);
// (R/2) inverse frequencies after scaling, as transformers computes them.
std::vector<double> rope_inv_freq(const RopeConfig& cfg);
// The same as a tensor of `dtype` (F32, or F64 for the CPU reference) on ctx's device.
Tensor rope_inv_freq_tensor(Context& ctx, const RopeConfig& cfg, DType dtype = DType::f32);

// x (N, heads, D) in place; positions (N) I32; inv_freq (R/2) F32 (F64 for F64 x). The
// angle of pair i at position p is p * inv_freq[i]; dims past R pass through.
void rope_forward(Context& ctx, Tensor& x, const Tensor& positions, const Tensor& inv_freq);
// dx (N, heads, D) in place: the inverse rotation (the transpose of the forward).
void rope_backward(Context& ctx, Tensor& dx, const Tensor& positions, const Tensor& inv_freq);

}  // namespace onn
