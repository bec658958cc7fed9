// The F32 flash-style CPU attention (kernels/cpu/attention_tiled.cpp), private to kernels/. The
// CPU front (kernels/cpu/attention.cpp) checks the arguments and calls these for F32; F64 runs
// the plain formula. Token-major layouts as in kernels/attention.h; offsets (sequences + 1) are
// the token offsets of the packed sequences.
#pragma once

#include <cstdint>

namespace onn::cpu_kernels {

struct AttentionDims {
  int64_t heads, kv_heads, dim;
};

// Inputs and outputs of the backward (all written: dq, dk, dv).
struct AttentionGrads {
  const float *q, *k, *v, *out, *lse, *dout;
  float *dq, *dk, *dv;
};

void attention_forward_tiled(const AttentionDims& a, const float* q, const float* k, const float* v,
                             const int64_t* offsets, int64_t sequences, float scale, float* out, float* lse);
void attention_backward_tiled(const AttentionDims& a, const AttentionGrads& g, const int64_t* offsets,
                              int64_t sequences, float scale);
// k_cache and v_cache: F32, or BF16 bits where bf16_cache.
void attention_decode_tiled(const AttentionDims& a, const float* q, const void* k_cache, const void* v_cache,
                            bool bf16_cache, const int32_t* lens, int64_t batch, int64_t tq, int64_t tmax, float scale,
                            float* out);

}  // namespace onn::cpu_kernels
